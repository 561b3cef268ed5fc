"""Data commands: ``align``, ``split``, ``import``, ``export`` (thin layers over msekit.views and
msekit.formats)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from msekit.commands import user_errors


def _echo(summary: dict) -> None:
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


def align(
    store: Path = typer.Argument(..., help="The feature store (.h5)."),
    mode: str = typer.Option(..., "--mode", help="none (packed raw sequences), word or rate."),
    rate: float = typer.Option(10.0, "--rate", help="Windows per second for --mode rate."),
) -> None:
    """Write an aligned view (/views/MODE) into the store, beside the raw sequences."""
    from msekit.views import align_store

    _echo(align_store(store, mode, rate))


def split(
    store: Path = typer.Argument(..., help="The feature store (.h5)."),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed."),
    ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,valid,test shares."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace splits from the labels."),
) -> None:
    """Write grouped, seeded train/valid/test splits into the store: clips of one source video (or
    of one value of the group column) never land in two splits. Exits 1, writing nothing, when a
    split would come out empty."""
    from msekit.splits import split_store

    _echo(split_store(store, seed, ratios, overwrite))


def import_(
    inputs: list[str] = typer.Argument(..., help="Files to import (.pkl, .csd [role=]path, .csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="The store to create."),
    fmt: str = typer.Option("auto", "--format", help="auto, mmsa, items, csd or csv."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="Unpickle without restrictions (runs code in the file)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
) -> None:
    """Import MMSA pickles, MSE-Adapter item lists, CMU SDK .csd files or a labels CSV."""
    from msekit.formats import import_any

    _echo(import_any([Path(p) if "=" not in p else p for p in inputs], out, fmt, trust_pickle, overwrite))


def export(
    store: Path = typer.Argument(..., help="The feature store (.h5)."),
    out: Path = typer.Option(..., "--out", "-o", help="The MMSA pickle to write."),
    fmt: str = typer.Option("mmsa", "--format", help="Only mmsa."),
) -> None:
    """Export a store to the MMSA pickle layout."""
    from msekit.errors import MsekitError
    from msekit.formats.mmsa import export_mmsa

    if fmt != "mmsa":
        raise MsekitError(f"--format must be mmsa; got {fmt!r}")
    _echo(export_mmsa(store, out))


def register(app: typer.Typer) -> None:
    """Add the data commands to the CLI."""
    app.command("align")(user_errors(align))
    app.command("split")(user_errors(split))
    app.command("import")(user_errors(import_))
    app.command("export")(user_errors(export))
