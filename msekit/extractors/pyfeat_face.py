"""py-feat backend (optional): its Detector's AUs, head pose and face score per frame.

py-feat is not installed with msekit (``pip install 'msekit[pyfeat]'``) and its Detector fetches
model weights from the Hugging Face hub on first use, so offline machines must have them cached.
The conversion of a py-feat result table to msekit's columns, ``fex_to_modality``, needs neither
and works on any Fex / DataFrame / dict of columns:

- AU01 .. AU43: py-feat's 20 AU columns as they are (probabilities in [0, 1]), clipped.
- pitch, yaw, roll: py-feat's ``Pitch``, ``Yaw``, ``Roll`` in degrees, passed through in
  py-feat's own (img2pose) sign convention, which msekit has not checked against OpenFace's.
- face: 1 where ``FaceScore >= min_face_score`` and the AUs are finite; else a row of zeros.
- times: ``[frame / fps, (frame + step) / fps)`` from the ``frame`` column (row order if absent),
  where ``step`` is the number of frames a row stands for (py-feat's ``skip_frames``).
  With several faces in a frame, the one with the highest FaceScore is kept.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from msekit.errors import MsekitError
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.base import Backend, face_feature_names, register
from msekit.extractors.face import finish_rows
from msekit.media import MediaInfo
from msekit.store import Modality

INSTALL_HINT = ("pip install 'msekit[pyfeat]' (py-feat also downloads its model weights from the "
                "Hugging Face hub on first use: run it once online, or copy the hub cache)")


def _column(table: Any, name: str) -> np.ndarray | None:
    """A column as float64, or None; works for DataFrames (Fex) and dicts of sequences."""
    if isinstance(table, Mapping):
        values = table.get(name)
    else:
        values = table[name] if name in getattr(table, "columns", ()) else None
    if values is None:
        return None
    values = getattr(values, "to_numpy", lambda: values)()
    try:
        return np.asarray(values, np.float64).reshape(-1)
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):  # tolerate '' and None from csv readers
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def read_fex_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """A py-feat CSV (``Fex.to_csv``) as a dict of string columns, without pandas."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise MsekitError(f"{Path(path).name}: empty py-feat CSV at {path}")
    header = [h.strip() for h in rows[0]]
    return {name: [r[j] if j < len(r) else "" for r in rows[1:] if r] for j, name in enumerate(header)}


def fex_to_modality(table: Any, fps: float, min_face_score: float = 0.5, step: int = 1) -> Modality:
    """Convert a py-feat result table to msekit's face columns.

    Args:
        table: a Fex or pandas DataFrame, or a dict of columns, with AU01..AU43, Pitch, Roll,
            Yaw, FaceScore and (optionally) frame.
        fps: the rate the frame numbers count at.
        min_face_score: rows with a lower FaceScore count as no face.
        step: frames each row stands for (py-feat's ``skip_frames``): a row lasts step / fps.

    Returns:
        Modality (T, 24) ordered like ``face_feature_names()``, one row per frame.

    Raises:
        MsekitError: fps is not positive or an AU / pose / FaceScore column is missing.

    Examples:
        >>> m = fex_to_modality(read_fex_csv("tests/fixtures/Feat_Test.csv"), fps=30)
        >>> m.data.shape, bool(m.mask[0])
        ((1, 24), True)
    """
    if not fps > 0 or step < 1:
        raise MsekitError(f"fex_to_modality: fps must be > 0 and step >= 1, got {fps}, {step}")
    needed = [*AU_NAMES, "Pitch", "Yaw", "Roll", "FaceScore"]
    cols = {name: _column(table, name) for name in needed}
    missing = [k for k, v in cols.items() if v is None]
    if missing:
        raise MsekitError(f"py-feat table lacks columns {missing}; expected a Fex from "
                          "Detector.detect_video / detect (or its CSV)")
    n = len(cols["FaceScore"])
    frame = _column(table, "frame")
    frame = np.arange(n, dtype=np.float64) if frame is None else np.nan_to_num(frame, nan=-1.0)
    score = np.nan_to_num(cols["FaceScore"], nan=-1.0)
    # One row per frame: the most confident face (py-feat writes a row per detected face).
    order = np.lexsort((-score, frame))
    keep = order[np.r_[True, frame[order][1:] != frame[order][:-1]]] if n else order
    keep = keep[frame[keep] >= 0]

    aus = np.stack([cols[a][keep] for a in AU_NAMES], axis=1).reshape(-1, len(AU_NAMES))  # (T, 20)
    pose = np.stack([cols[p][keep] for p in ("Pitch", "Yaw", "Roll")], axis=1).reshape(-1, 3)
    mask = (score[keep] >= min_face_score) & np.isfinite(aus).all(axis=1)  # (T,)
    return finish_rows(aus, pose, mask, frame[keep] / fps, step / fps)


@dataclass
class PyFeatConfig:
    """Settings of the py-feat backend (saved with the store)."""

    fps: float | None = field(default=None, metadata={
        "help": "frames per second to analyse (every k-th frame); None: every frame"})
    device: str = field(default="cpu", metadata={"help": "torch device for py-feat's models"})
    batch_size: int = field(default=1, metadata={"help": "frames per py-feat batch"})
    min_face_score: float = field(default=0.5, metadata={"help": "FaceScore below: no face"})

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise MsekitError(f"pyfeat fps must be > 0 or None, got {self.fps}")
        if self.batch_size < 1:
            raise MsekitError(f"pyfeat batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.min_face_score <= 1.0:
            raise MsekitError(f"pyfeat min_face_score must be in [0, 1], got {self.min_face_score}")


@register("video", "pyfeat", PyFeatConfig)
class PyFeatFace(Backend):
    """Face features with py-feat's Detector (optional dependency, slow on CPU).

    Args:
        config: the backend settings.

    Raises:
        MsekitError: py-feat is not installed or its Detector cannot load its weights.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, str]] = {"fps": "fps"}

    def __init__(self, config: PyFeatConfig) -> None:
        self.config = config
        self.feature_names = face_feature_names()
        try:
            from feat import Detector
        except ImportError as e:
            raise MsekitError(f"the pyfeat video backend needs py-feat ({e}); {INSTALL_HINT}") from None
        try:
            self.detector = Detector(device=config.device)
        except Exception as e:  # weights missing offline, torch/device errors, ...
            raise MsekitError(f"py-feat's Detector could not load ({type(e).__name__}: {e}); "
                              f"{INSTALL_HINT}") from None

    def extract(self, path: Path, info: MediaInfo) -> Modality:
        """Run py-feat on every k-th frame (k = native fps / config.fps) and convert the result."""
        cfg = self.config
        skip = max(1, int(round(info.fps / cfg.fps))) if cfg.fps else 1
        det = self.detector
        if hasattr(det, "detect_video"):  # py-feat < 0.7
            fex = det.detect_video(str(path), skip_frames=skip, batch_size=cfg.batch_size)
        else:  # py-feat >= 0.7
            fex = det.detect(str(path), data_type="video", skip_frames=skip,
                             batch_size=cfg.batch_size)
        return fex_to_modality(fex, fps=info.fps, min_face_score=cfg.min_face_score, step=skip)
