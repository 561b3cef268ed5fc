"""`msekit label STORE labels.csv`: set or change labels, splits, groups and texts in place."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from msekit.commands import user_errors


def label(
    store: Path = typer.Argument(..., help="The feature store (.h5)."),
    labels: Path = typer.Argument(..., help="CSV id,label[,split][,group][,text] or the MMSA "
                                  "label.csv."),
) -> None:
    """Set the labels (and splits, groups, texts when the table has them) of a store's samples.

    Prints what changed; the features are not touched.
    """
    from msekit.relabel import relabel

    summary = relabel(store, labels)
    for w in summary.pop("warnings"):
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    changed = ", ".join(f"{k} {v}" for k, v in summary["changed"].items()) or "nothing"
    typer.echo(f"{store}: changed {changed} (of {summary['matched']} samples in {labels.name}; "
               f"{summary['not_in_table']} samples not in the table kept as they were)")
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add the label command to the CLI."""
    app.command("label")(user_errors(label))
