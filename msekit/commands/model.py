"""`msekit train`, `evaluate` and `predict`: thin wrappers over msekit.train / evaluate / predict.

The `train` options are generated from the fields of ``TrainConfig`` and its nested
``AdapterConfig`` (their ``help`` metadata, their real defaults), so there is one list of
options, in ``msekit/train/config.py``.
"""

from __future__ import annotations

import inspect
import json
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import typer

from msekit.commands import user_errors

_O = typer.Option


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _unwrap(hint: Any) -> tuple[type, type | None]:
    """(scalar type, item type of a list / tuple field or None) of a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) in (list, tuple):
        return str, (typing.get_args(hint) or (str,))[0]
    return hint, None


def _cli_type(hint: Any) -> type:
    """The option's type: lists and tuples are typed as comma-separated text."""
    return _unwrap(hint)[0]


def _train_fields() -> list[tuple[str, Any, Any, str, str]]:
    """(name, hint, default, flag, help) of every generated `train` option, in field order."""
    from msekit.adapter.config import AdapterConfig
    from msekit.train.config import ADAPTER_DERIVED, TrainConfig

    out = []
    for cls, skip in ((TrainConfig, ()), (AdapterConfig, ADAPTER_DERIVED)):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in skip or f.metadata.get("cli") is False:
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            out.append((f.name, hints[f.name], _default(f), flag, f.metadata.get("help", "")))
    return out


def _option(name: str, hint: Any, default: Any, flag: str, help_text: str) -> inspect.Parameter:
    typ = _cli_type(hint)
    shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
    decls = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag]
    info = _O(None, *decls, help=help_text, show_default=False if default is None else str(shown))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=typ | None)


def _to_value(name: str, hint: Any, text: Any) -> Any:
    """A command-line value as the config field wants it (lists split at commas)."""
    from msekit.errors import MsekitError
    from msekit.train.config import parse_seeds

    item = _unwrap(hint)[1]
    if text is None or item is None or name == "modalities":  # TrainConfig parses modalities itself
        return text
    if name == "seeds":
        return parse_seeds(text)
    try:
        return [item(x.strip()) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise MsekitError(f"--{name.replace('_', '-')} must be comma-separated {item.__name__} values, "
                          f"received {text!r}") from None


def _train_command():
    """The `train` command function, its signature built from the config fields."""
    specs = _train_fields()

    def train_cmd(store: Path, out: Path | None = None, quiet: bool = False, **opts: Any) -> None:
        """Train an MSE-Adapter on a frozen LLM; the best adapter lands in OUT/adapter."""
        from msekit.train import resolve_config, train, train_seeds

        hints = {n: h for n, h, *_ in specs}
        values = {k: _to_value(k, hints[k], v) for k, v in opts.items()}
        cfg = resolve_config(values.pop("preset", None), store=str(store), out=str(out) if out else None,
                             progress=not quiet, **values)
        if out is None:
            typer.echo(f"run folder: {cfg.out} (--out to choose another)")
        if cfg.seeds:
            res = train_seeds(cfg)
            if not res.interrupted:
                typer.echo(f"{len(res.seeds)} seeds: {cfg.out}/summary.json, {cfg.out}/summary.md")
                return
        else:
            res = train(cfg)
        if res.interrupted:
            typer.echo("stopped (--stop-after); resume with the same command")
            return
        when = "the start (no epoch beat the warm start by its margin)" if res.best_epoch == -1 else f"epoch {res.best_epoch}"
        typer.echo(f"best {res.metric} {res.best_metric:.4f} at {when}; adapter: {cfg.out}/adapter")

    params = [
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                          default=typer.Argument(..., help="The feature store (.h5); without splits, "
                                                 "msekit train makes a grouped one.")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                          default=_O(None, "--out", "-o", help="The run folder.",
                                     show_default="runs/<store stem>-<llm>")),
        *[_option(*spec) for spec in specs],
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=_O(False, "--quiet", "-q", help="No progress bar or tables.")),
    ]
    train_cmd.__signature__ = inspect.Signature(params)
    train_cmd.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return train_cmd


@user_errors
def evaluate_cmd(
    run: Path = typer.Argument(..., help="A run folder (or adapter folder, or a multi-seed run folder)."),
    store: Path = typer.Argument(..., help="The feature store to evaluate on."),
    split: str = _O("test", help="The split ('all' for every sample)."),
    convention: str | None = _O(None, help="mosei | sims | classification (default: from the labels)."),
    decode: str = _O("score", help="score (likelihood / constrained) | generate (greedy, parsed)."),
    batch_size: int = _O(16, min=1),
    json_out: Path | None = _O(None, "--json", help="Also write the metrics as JSON here ('-': stdout)."),
    device: str | None = _O(None),
    quiet: bool = _O(False, "--quiet", "-q"),
) -> None:
    """Metrics of a trained run on a split of a store (MMSA conventions, named in the output)."""
    from rich.console import Console

    from msekit import report
    from msekit.evaluate import evaluate
    from msekit.metrics import finite_json, json_metrics

    m = evaluate(run, store, split=None if split == "all" else split, convention=convention,
                 decode=decode, batch_size=batch_size, device=device, progress=not quiet)
    seeds = "seeds" in m and "mean" in m
    if json_out is not None:
        doc = finite_json(m) if seeds else json_metrics(m)
        text = json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
        if str(json_out) == "-":
            typer.echo(text, nl=False)
            return
        json_out.write_text(text)
    console = Console()
    if seeds:
        console.print(report.summary_table({"seeds": list(m["seeds"]), "splits": {split: m}},
                                           title=f"{run} on {store}"))
        return
    console.print(report.metrics_table({split: m}, title=f"{run} on {store}"))
    if "per_class" in m:
        console.print(report.per_class_table(m))
    if m.get("unparsed"):
        typer.secho(f"warning: {m['unparsed']} of {m['n'] + m['unparsed']} answers could not be parsed "
                    "and are left out of the metrics", err=True, fg=typer.colors.YELLOW)

@user_errors
def predict_cmd(
    run: Path = typer.Argument(..., help="A run folder (or adapter folder)."),
    inputs: list[Path] = typer.Argument(..., help="Video files / folders, or one feature store (.h5)."),
    decode: str = _O("score", help="score (likelihood / constrained) | generate (greedy, parsed)."),
    split: str | None = _O(None, help="With a store: only this split."),
    transcripts: Path | None = _O(None, help="With videos: a transcripts file (id,text)."),
    csv_out: Path | None = _O(None, "--csv", help="Write a CSV file ('-': stdout)."),
    json_out: Path | None = _O(None, "--json", help="Write a JSON file ('-': stdout)."),
    batch_size: int = _O(16, min=1),
    workers: int = _O(1, min=1, help="Extraction processes."),
    device: str | None = _O(None),
    quiet: bool = _O(False, "--quiet", "-q"),
) -> None:
    """Predict videos (extracted with the adapter's recorded settings) or a store."""
    from msekit.predict import predict

    pred = predict(run, inputs, decode=decode, batch_size=batch_size, split=split, transcripts=transcripts,
                   workers=workers, device=device, progress=not quiet)
    for dest, text in ((csv_out, pred.to_csv), (json_out, pred.to_json)):
        if dest is None:
            continue
        if str(dest) == "-":
            typer.echo(text(), nl=False)
        else:
            dest.write_text(text())
    if csv_out is None and json_out is None:
        _print_table(pred)
    if pred.n_unparsed:
        typer.secho(f"warning: {pred.n_unparsed} of {len(pred.ids)} answers could not be parsed "
                    "(prediction empty)", err=True, fg=typer.colors.YELLOW)
    for f in pred.failures:
        typer.secho(f"error: {f.get('path')}: {f.get('stage')}: {f.get('reason')}", err=True,
                    fg=typer.colors.RED)
    if pred.failures:
        typer.secho(f"{len(pred.failures)} of {len(pred.failures) + len(pred.ids)} input(s) failed; "
                    "predictions are for the others", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the model commands to the CLI."""
    app.command("train")(user_errors(_train_command()))
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)


def _print_table(pred) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = pred.rows()
    table = Table(title=f"Predictions ({pred.task}, decode={pred.decode})")
    for col in (rows[0] if rows else {"id": 0, "prediction": 0}):
        table.add_column(col, justify="left" if col in ("id", "prediction", "answer") else "right")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r.values()])
    Console().print(table)
