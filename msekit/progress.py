"""One progress-bar style for every long job (rich, on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

from typing import Any


def start_bar(label: str, total: int, *, eta: bool = False, fields: dict[str, str] | None = None,
              completed: int = 0, transient: bool = False) -> Any:
    """A started ``rich.progress.Progress`` with one task (its id is ``task_ids[0]``).

    Args:
        label: the text before the bar.
        total: number of steps.
        eta: add the estimated time remaining.
        fields: extra text columns, name -> template (e.g. ``{"loss": "loss {task.fields[loss]}"}``);
            set them with ``update(task, name=...)``; each starts as "-".
        completed: steps already done (a resumed epoch).
        transient: remove the bar when it stops.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("eta"), TimeRemainingColumn()]
    columns += [TextColumn(template) for template in (fields or {}).values()]
    bar = Progress(*columns, console=Console(stderr=True), transient=transient)
    bar.add_task(label, total=total, completed=completed, **dict.fromkeys(fields or {}, "-"))
    bar.start()
    return bar
