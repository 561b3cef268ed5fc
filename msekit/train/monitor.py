"""What a run shows and logs while it trains: ``metrics.jsonl`` and the per-epoch progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object a line to ``metrics.jsonl`` (rank 0 only); NaN / inf become null."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")


class TrainBar:
    """rich progress bar per epoch with the running loss (rank 0, when enabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.p = enabled, total, None

    def start(self, epoch: int, done: int) -> None:
        if not self.enabled:
            return
        from msekit.progress import start_bar

        self.p = start_bar(f"epoch {epoch}", self.total, completed=done,
                           fields={"loss": "loss {task.fields[loss]}"})
        self.t = self.p.task_ids[0]
        self.run, self.n = 0.0, 0

    def advance(self, loss: float) -> None:
        if self.p is not None:
            self.run, self.n = self.run + loss, self.n + 1
            self.p.update(self.t, advance=1, loss=f"{self.run / self.n:.4f}")

    def stop(self) -> None:
        if self.p is not None:
            self.p.stop()
            self.p = None
