"""What an extraction run reports: ``ExtractSummary``, its table, the progress bar and messages.

Import these from ``msekit.extract``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExtractSummary:
    """What an extraction run did.

    Attributes:
        out: the store.
        total: items in this run (after sharding), refused inputs included.
        done: samples extracted and committed now.
        skipped: samples already in the store (resume).
        updated: field -> skipped samples whose label / split / group / text the tables changed.
        failed: per-item failures of this run.
        failures: their records (id, path, stage, reason).
        warnings: run-level and per-item warnings.
        orphan_ids: ids in the transcripts/labels without a video.
        no_transcript: videos without a transcript (text '').
        no_audio: samples kept with audio length 0.
        no_face: samples without a face in any frame.
        media_seconds: duration of the media extracted now.
        wall_seconds: run time.
        stopped: True when ``strict`` stopped the run at a failure.
        workers: worker processes used (1 = in-process).
    """

    out: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    orphan_ids: int = 0
    no_transcript: int = 0
    no_audio: int = 0
    no_face: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    stopped: bool = False
    workers: int = 1
    updated: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def speed(self) -> float:
        """Media seconds extracted per wall second (x realtime); the RTF is its inverse."""
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class _Reporter:
    """Progress bar (rich, on stderr) and per-item messages; silent when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.progress = None
        if enabled and total:
            from msekit.progress import start_bar

            self.progress = start_bar("extract", total, eta=True,
                                      fields={"speed": "{task.fields[speed]}"})
            self.task = self.progress.task_ids[0]

    def say(self, msg: str, style: str = "") -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.console.print(msg, style=style, markup=False, highlight=False)
        else:
            from rich.console import Console

            Console(stderr=True).print(msg, style=style, markup=False, highlight=False)

    def advance(self, speed: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, speed=f"{speed:.1f}x realtime")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def summary_table(summary: ExtractSummary):
    """A rich Table of the run's counts, media hours and speed."""
    from rich.table import Table

    t = Table(title=f"msekit extract -> {summary.out}", show_header=True)
    for col in ("done", "skipped", "failed", "warnings", "media h", "wall s", "speed"):
        t.add_column(col, justify="right")
    t.add_row(str(summary.done), str(summary.skipped), str(summary.failed),
              str(len(summary.warnings)), f"{summary.media_seconds / 3600:.3f}",
              f"{summary.wall_seconds:.1f}", f"{summary.speed:.2f}x realtime")
    if summary.updated:
        t.caption = "skipped samples updated from the tables: " + ", ".join(
            f"{k} {v}" for k, v in sorted(summary.updated.items()))
    return t
