"""CLI command groups; each module exposes ``register(app)`` and stays a thin layer over the API.

Command bodies are wrapped with ``user_errors`` so that a ``MsekitError`` becomes one line on
stderr and exit status 1, both under the real CLI and under Typer's CliRunner in tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from msekit.errors import MsekitError

# Modules under msekit.commands whose register(app) the CLI calls, in help order.
COMMAND_MODULES: list[str] = ["extract", "data", "label", "model"]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn MsekitError into `error: <message>` on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MsekitError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None

    return wrapper
