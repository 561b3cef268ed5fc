"""`msekit train`, `evaluate` and `predict`: thin wrappers over msekit.train / evaluate / predict."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from msekit.commands import user_errors

_O = typer.Option


def register(app: typer.Typer) -> None:
    """Add the model commands to the CLI."""

    @app.command("train")
    @user_errors
    def train_cmd(
        store: Path = typer.Argument(..., help="The feature store (.h5) with train/valid(/test) splits."),
        out: Path = _O(..., "--out", "-o", help="The run folder (adapter, checkpoints, metrics, plots)."),
        preset: str | None = _O(None, help="A preset of pipelines/presets.json, e.g. mosei-llama2-7b."),
        llm: str | None = _O(None, help="LLM alias, Hugging Face id or folder (default: smollm2-135m)."),
        trust_remote_code: bool | None = _O(None, "--trust-remote-code/--no-trust-remote-code"),
        task: str | None = _O(None, help="regression | classification (default: from the store)."),
        labels: str | None = _O(None, help="Comma-separated classes to train on, in index order "
                                "(default: all of the store's); other samples are left out."),
        prompt: str | None = _O(None, help="Prompt preset (mosei, meld, ...) or template (default: the task's)."),
        label_format: str | None = _O(None, help="decimal1 | signed_decimal1 | index | name."),
        modalities: str | None = _O(None, help="Non-text modalities: 'audio,video' (default), 'audio', "
                                    "'video' or 'text' (text only: audio/video lengths zeroed)."),
        epochs: int | None = _O(None, help="Maximum epochs."),
        batch_size: int | None = _O(None, help="Samples per process and micro-batch."),
        grad_accum: int | None = _O(None, help="Micro-batches per optimizer step."),
        lr: float | None = _O(None, help="Peak learning rate."),
        weight_decay: float | None = _O(None),
        adam_eps: float | None = _O(None, help="AdamW eps (authors: 1e-4)."),
        warmup_epochs: float | None = _O(None, help="Cosine schedule horizon in epochs (default: epochs)."),
        warmup_ratio: float | None = _O(None, help="Linear warm-up share of the horizon (0.1)."),
        max_grad_norm: float | None = _O(None, help="Clip gradients to this norm."),
        patience: int | None = _O(None, help="Early-stop patience (default 10 regression, 8 classes)."),
        seed: int | None = _O(None),
        audio_hidden: int | None = _O(None), video_hidden: int | None = _O(None),
        num_pseudo_tokens: int | None = _O(None),
        pseudo_token_mode: str | None = _O(None, help="linear1 (paper) | full."),
        text_pooling: str | None = _O(None, help="mean_real | mean_all (paper)."),
        normalize: bool | None = _O(None, "--normalize/--no-normalize", help="Standardize features."),
        max_len: int | None = _O(None, help="Frames kept per modality."),
        precision: str | None = _O(None, help="auto | fp32 | bf16 | fp16."),
        grad_checkpointing: bool | None = _O(None, "--grad-checkpointing/--no-grad-checkpointing"),
        device: str | None = _O(None, help="cpu, cuda, cuda:1 (default: cuda if available)."),
        num_workers: int | None = _O(None, help="DataLoader workers."),
        checkpoint_every: int | None = _O(None, help="Also checkpoint every N optimizer steps."),
        stop_after: int | None = _O(None, help="Stop after N optimizer steps, as if killed (testing)."),
        resume: bool | None = _O(None, "--resume/--no-resume",
                                 help="Resume from the run folder's checkpoint (default: when there is one)."),
        overwrite: bool = _O(False, "--overwrite", help="Start over in an existing run folder."),
        quiet: bool = _O(False, "--quiet", "-q", help="No progress bar or tables."),
    ) -> None:
        """Train an MSE-Adapter on a frozen LLM; the best adapter lands in OUT/adapter."""
        from msekit.train import resolve_config, train

        cfg = resolve_config(
            preset, store=str(store), out=str(out), llm=llm, trust_remote_code=trust_remote_code, task=task,
            label_names=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
            prompt=prompt, label_format=label_format, modalities=modalities, epochs=epochs,
            batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, adam_eps=adam_eps,
            warmup_epochs=warmup_epochs, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
            patience=patience, seed=seed, audio_hidden=audio_hidden, video_hidden=video_hidden,
            num_pseudo_tokens=num_pseudo_tokens, pseudo_token_mode=pseudo_token_mode,
            text_pooling=text_pooling, normalize=normalize, max_len=max_len, precision=precision,
            grad_checkpointing=grad_checkpointing, device=device, num_workers=num_workers,
            checkpoint_every=checkpoint_every, stop_after=stop_after, resume=resume, overwrite=overwrite,
            progress=not quiet,
        )
        res = train(cfg)
        if res.interrupted:
            typer.echo(f"stopped after step {res.global_step} (--stop-after); resume with the same command")
            return
        typer.echo(f"best {res.metric} {res.best_metric:.4f} at epoch {res.best_epoch}; adapter: {out / 'adapter'}")

    @app.command("evaluate")
    @user_errors
    def evaluate_cmd(
        run: Path = typer.Argument(..., help="A run folder (or adapter folder)."),
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
        from msekit.predict import load_run

        r = load_run(run, device=device)
        m = evaluate(r, store, split=None if split == "all" else split, convention=convention,
                     decode=decode, batch_size=batch_size, progress=not quiet)
        if json_out is not None:
            text = json.dumps(m, indent=2, default=lambda x: None) + "\n"
            if str(json_out) == "-":
                typer.echo(text, nl=False)
                return
            json_out.write_text(text)
        console = Console()
        console.print(report.metrics_table({split: m}, title=f"{run} on {store}"))
        if "per_class" in m:
            console.print(report.per_class_table(m))
        if m.get("unparsed"):
            typer.secho(f"warning: {m['unparsed']} of {m['n'] + m['unparsed']} answers could not be parsed "
                        "and are left out of the metrics", err=True, fg=typer.colors.YELLOW)

    @app.command("predict")
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
        from msekit.predict import load_run, predict

        r = load_run(run, device=device)
        pred = predict(r, inputs, decode=decode, batch_size=batch_size, split=split, transcripts=transcripts,
                       workers=workers, progress=not quiet)
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
