"""The ``msekit`` command line: a thin Typer layer over the Python API.

Every command checks its input, calls one library function and prints a summary. Nothing a user
types ends in a traceback:

- a usage error (unknown command or flag, missing option, bad value) prints one line, a hint,
  and exits 2;
- a ``MsekitError`` (bad input, a missing file or model) prints one line and exits 1.
"""

from __future__ import annotations

import importlib
import sys

import typer

from msekit import __version__
from msekit.commands import COMMAND_MODULES
from msekit.errors import MsekitError

app = typer.Typer(
    name="msekit",
    help="From raw videos to multimodal sentiment and emotion models on a frozen LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"msekit {__version__}")
        raise typer.Exit()


for _name in COMMAND_MODULES:
    importlib.import_module(f"msekit.commands.{_name}").register(app)


def _click_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage/click errors, exits, aborts) of every click that may be in play.

    typer >= 0.29 bundles its own copy of click (``typer._click``); older typer uses ``click``.
    Both are collected so the handler works with either.
    """
    errors: list[type] = []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        errors.append(m.ClickException)
        exits.append(getattr(m, "Exit", typer.Exit))
        aborts.append(getattr(m, "Abort", typer.Abort))
    return tuple(errors), tuple(exits), tuple(aborts)


def usage_line(e: Exception) -> str:
    """The one-line form of a click usage error, plus the help hint of the command it concerns."""
    msg = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    hint = ""
    if ctx is not None:
        hint = f" (try '{ctx.command_path} --help')"
    return f"error: {msg}{hint}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; usage errors exit 2, MsekitError exits 1, each in one line."""
    errors, exits, aborts = _click_classes()
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args=args, prog_name="msekit", standalone_mode=False)
    except MsekitError as e:
        typer.secho(f"error: {' '.join(str(e).split())}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except exits as e:
        sys.exit(getattr(e, "exit_code", 0))
    except aborts:
        typer.secho("aborted", err=True)
        sys.exit(1)
    except errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `msekit` or a bare group: help, exit 2
            text = e.format_message()  # empty when rich has already printed the help
            if text.strip():
                typer.echo(text)
            sys.exit(2)
        code = getattr(e, "exit_code", 1)
        if code == 2 or getattr(e, "ctx", None) is not None:
            typer.secho(usage_line(e), err=True, fg="red")
            sys.exit(2)
        typer.secho(f"error: {' '.join(e.format_message().split())}", err=True, fg="red")
        sys.exit(code or 1)
    if isinstance(rc, int) and rc:
        sys.exit(rc)
