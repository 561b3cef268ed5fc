"""The ``msekit`` command line: a thin Typer layer over the Python API.

Every command checks its input, calls one library function and prints a summary. User mistakes
(``MsekitError``) become one line on stderr and exit status 1, without a traceback.
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


def main() -> None:
    """Entry point: run the app, turning MsekitError into one line and exit 1."""
    try:
        rc = app(standalone_mode=False)
    except MsekitError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # click's usage errors are reported by click itself
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
    if isinstance(rc, int) and rc:
        sys.exit(rc)
