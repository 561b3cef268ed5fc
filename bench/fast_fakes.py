"""A near-zero-cost face backend ('nullface') for the driver-memory benchmark of bench_ray.py.

Imported by the benchmark's driver and, as a plugin module, by every worker or actor. For
zero-length ``.mp4`` files it also replaces ``msekit.media.probe`` with a fixed answer (1 s,
5 fps, 64x64, no audio), so that 10,000 queued files cost only the orchestration: the jobs, the
results' round trips and the store's commits.
"""

from __future__ import annotations

import json
import resource
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from msekit import media
from msekit.extractors.base import MediaInfo, register
from msekit.store import Modality

_real_probe = media.probe


def _probe(path, *args, **kwargs) -> MediaInfo:
    p = Path(path)
    if p.suffix == ".mp4" and p.stat().st_size == 0:
        return MediaInfo(p, 1.0, 5.0, 64, 64, 5, False, 0)
    return _real_probe(path, *args, **kwargs)


media.probe = _probe


@dataclass
class NullFaceConfig:
    fps: float | None = None
    blendshapes: bool = False
    model_path: str | None = None


@register("video", "nullface", NullFaceConfig)
class NullFace:
    """Five rows of four features seeded by the file name (so that stores can be compared)."""

    version: ClassVar[str] = "0"

    def __init__(self, config: NullFaceConfig) -> None:
        self.config = config
        self.feature_names = ["AU01", "AU02", "pitch", "face"]

    def extract(self, path: Path, info: MediaInfo) -> Modality:
        rng = np.random.default_rng(zlib.crc32(Path(path).name.encode()))
        t = np.arange(5) / 5.0
        return Modality(rng.random((5, 4), np.float32), np.stack([t, t + 0.2], 1),
                        np.ones(5, bool))


def drive(engine: str, folder: str, out: str, workers: int) -> None:
    """Extract ``folder`` with nullface; print the driver's peak RSS (MB) and counts as JSON."""
    from msekit.extract import ExtractConfig, extract

    config = ExtractConfig(face="nullface", audio="", llm="none")
    s = extract([folder], out, config, workers=workers, engine=engine, progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    json.dump({"rss_mb": rss, "done": s.done, "failed": s.failed, "wall_s": s.wall_seconds},
              sys.stdout)
