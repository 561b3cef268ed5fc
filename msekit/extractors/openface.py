"""OpenFace 2.x backend: read the CSV that OpenFace's FeatureExtraction wrote for a video.

msekit does not run OpenFace (a C++ program); run it first, e.g.
``FeatureExtraction -f clip.mp4 -out_dir feats/``, which writes ``feats/clip.csv``. The CSV is
looked up in ``csv_dir`` and then beside the video, under the video's stem. Its column names may
start with spaces (OpenFace writes ``frame, face_id, timestamp, ...``); they are stripped.

How each output column is filled (py-feat's 20 AUs, then pose, then the face flag):

====================  ===================================================================
output                from the OpenFace CSV
====================  ===================================================================
AU01 .. AU26 that     ``AUxx_r / 5`` clipped to [0, 1] (OpenFace intensities are 0-5):
OpenFace estimates    AU01 02 04 05 06 07 09 10 12 14 15 17 20 23 25 26
AU28                  ``AU28_c`` (OpenFace only detects its presence: 0 or 1)
AU43 (eyes closed)    ``AU45_r / 5`` (AU45 blink is the same eyelid closure, only shorter;
                      MediaPipe's AU43 also comes from the blink blendshapes); else ``AU45_c``
AU11, AU24            0 (OpenFace has neither an intensity nor a presence for them)
other missing AUs     ``AUxx_c`` when the CSV has it, else 0 (e.g. an older OpenFace build)
pitch, yaw, roll      ``pose_Rx``, ``pose_Ry``, ``pose_Rz`` in degrees (OpenFace gives
                      radians; camera frame x right, y down, z forward, R = Rx Ry Rz)
face                  1 where ``success == 1`` and ``confidence >= min_confidence``
gaze extras           ``gaze_0_x .. gaze_1_z`` (unit eye vectors) and ``gaze_angle_x/y``
(``gaze=True``)       (radians; computed as OpenFace does when the CSV lacks them)
====================  ===================================================================

Rows where the face flag is 0 hold zeros (mask False). Times come from ``timestamp``: a frame
lasts until the next one starts (the last one for the median frame step). When the CSV tracks
several faces (``face_id``), each frame keeps the face with the highest confidence.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from msekit.errors import MediaError, MsekitError
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.base import Backend, face_feature_names, register
from msekit.extractors.face import finish_rows
from msekit.media import MediaInfo
from msekit.store import Modality

GAZE_NAMES: tuple[str, ...] = ("gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y",
                               "gaze_1_z", "gaze_angle_x", "gaze_angle_y")
_SUBSTITUTES = {"AU43": "AU45"}  # target AU -> OpenFace AU with the same eyelid action
_REQUIRED = ("timestamp", "success", "confidence", "pose_Rx", "pose_Ry", "pose_Rz")


def read_openface_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an OpenFace CSV into float columns (names stripped of spaces).

    Raises:
        MediaError: the file is missing, empty, not a CSV of numbers, or lacks the columns
            msekit needs (timestamp, success, confidence, pose_R*).
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise MediaError(f"{path.name}: cannot read the OpenFace CSV at {path} ({e.strerror})") from None
    if not rows:
        raise MediaError(f"{path.name}: the OpenFace CSV at {path} is empty; rerun FeatureExtraction")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    try:
        values = np.array([[float(v) for v in r] for r in body], np.float64).reshape(-1, len(header))
    except ValueError as e:
        raise MediaError(f"{path.name}: not an OpenFace CSV of numbers at {path} ({e})") from None
    columns = {name: values[:, j] for j, name in enumerate(header)}
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise MediaError(f"{path.name}: the OpenFace CSV at {path} lacks columns {missing}; "
                         "run OpenFace 2.x FeatureExtraction with pose and AU output (-pose -aus)")
    return columns


def _gaze_columns(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(n, 8) gaze vectors and angles; angles computed like OpenFace when not in the CSV."""
    out = np.zeros((n, len(GAZE_NAMES)), np.float64)
    for j, name in enumerate(GAZE_NAMES[:6]):
        if name in columns:
            out[:, j] = columns[name]
    if "gaze_angle_x" in columns and "gaze_angle_y" in columns:
        out[:, 6], out[:, 7] = columns["gaze_angle_x"], columns["gaze_angle_y"]
    else:
        g = (out[:, 0:3] + out[:, 3:6]) / 2.0  # (n, 3) mean of both eyes' gaze vectors
        out[:, 6] = np.arctan2(g[:, 0], -g[:, 2])
        out[:, 7] = np.arctan2(g[:, 1], -g[:, 2])
    return out


def openface_to_modality(
    columns: dict[str, np.ndarray],
    min_confidence: float = 0.5,
    gaze: bool = False,
) -> Modality:
    """Convert OpenFace columns (see ``read_openface_csv``) to msekit's face columns.

    Args:
        columns: column name -> (N,) values.
        min_confidence: OpenFace tracking confidence below which a frame counts as no face.
        gaze: append the 8 ``GAZE_NAMES`` columns.

    Returns:
        Modality (T, 24 [+ 8]) ordered like ``face_feature_names()`` (+ ``GAZE_NAMES``).
    """
    if "face_id" in columns and "frame" in columns and len(columns["frame"]):
        # Several tracked faces: per frame, the row with the highest confidence.
        order = np.lexsort((-columns["confidence"], columns["frame"]))
        frames = columns["frame"][order]
        keep = order[np.r_[True, frames[1:] != frames[:-1]]]
        columns = {k: v[keep] for k, v in columns.items()}
    order = np.argsort(columns["timestamp"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    n = len(columns["timestamp"])

    aus = np.zeros((n, len(AU_NAMES)), np.float64)  # (N, 20)
    for j, au in enumerate(AU_NAMES):
        source = _SUBSTITUTES.get(au, au)
        if f"{au}_r" in columns:
            aus[:, j] = columns[f"{au}_r"] / 5.0
        elif f"{au}_c" in columns:
            aus[:, j] = columns[f"{au}_c"]
        elif f"{source}_r" in columns:
            aus[:, j] = columns[f"{source}_r"] / 5.0
        elif f"{source}_c" in columns:
            aus[:, j] = columns[f"{source}_c"]
    pose = np.degrees(np.stack([columns["pose_Rx"], columns["pose_Ry"], columns["pose_Rz"]], 1))
    mask = (columns["success"] > 0.5) & (columns["confidence"] >= min_confidence)  # (N,)
    start = columns["timestamp"]
    step = np.diff(start)
    last = float(np.median(step)) if len(step) else 0.0
    end = np.r_[start[1:], start[-1:] + last] if n else start
    return finish_rows(aus, pose, mask, start, end, _gaze_columns(columns, n) if gaze else None)


@dataclass
class OpenFaceConfig:
    """Settings of the OpenFace-CSV backend (saved with the store)."""

    csv_dir: str | None = field(default=None, metadata={
        "help": "folder of FeatureExtraction CSVs named <video stem>.csv; None: beside each video"})
    min_confidence: float = field(default=0.5, metadata={
        "help": "frames tracked with lower OpenFace confidence count as no face"})
    gaze: bool = field(default=False, metadata={"help": "append 8 gaze columns"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise MsekitError(f"openface min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.csv_dir is not None and not Path(self.csv_dir).is_dir():
            raise MsekitError(f"openface csv_dir is not a folder: {self.csv_dir}")


@register("video", "openface", OpenFaceConfig)
class OpenFaceCsv(Backend):
    """Face features from OpenFace 2.x FeatureExtraction CSVs (one per video).

    Args:
        config: the backend settings.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"

    def __init__(self, config: OpenFaceConfig) -> None:
        self.config = config
        self.feature_names = face_feature_names() + (list(GAZE_NAMES) if config.gaze else [])

    def csv_path(self, path: Path) -> Path:
        """The CSV for a video: ``csv_dir/<stem>.csv``, else ``<video folder>/<stem>.csv``.

        Raises:
            MediaError: neither exists.
        """
        path = Path(path)
        candidates = [Path(self.config.csv_dir) / f"{path.stem}.csv"] if self.config.csv_dir else []
        candidates.append(path.with_suffix(".csv"))
        for c in candidates:
            if c.is_file():
                return c
        raise MediaError(
            f"{path.name}: no OpenFace CSV found (looked for {', '.join(map(str, candidates))}); "
            f"run `FeatureExtraction -f {path} -out_dir DIR` and pass csv_dir=DIR"
        )

    def extract(self, path: Path, info: MediaInfo | None = None) -> Modality:
        """Read and convert the OpenFace CSV of ``path`` (the video itself is not decoded)."""
        cfg = self.config
        return openface_to_modality(read_openface_csv(self.csv_path(path)),
                                    min_confidence=cfg.min_confidence, gaze=cfg.gaze)
