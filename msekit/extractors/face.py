"""What every face backend shares: turning per-frame values into the store's face rows.

A face backend computes, per frame, 20 AU values, 3 pose angles, whether the face was found and
optional extra columns; ``finish_rows`` turns them into a ``Modality`` that follows the store's
contract (``docs/store-schema.md``): columns ``face_feature_names(extras)`` in order, float32,
no NaN or infinity (they become 0), every masked row all zeros (its face flag included), and
times (T, 2) of [start, end) seconds.
"""

from __future__ import annotations

import numpy as np

from msekit.errors import MsekitError
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.base import POSE_NAMES
from msekit.store import Modality


def finish_rows(
    aus: np.ndarray,
    pose: np.ndarray,
    mask: np.ndarray,
    start: np.ndarray,
    end: np.ndarray | float,
    extra: np.ndarray | None = None,
) -> Modality:
    """Face rows in the shared schema.

    Args:
        aus: (T, 20) AU values in ``AU_NAMES`` order (clipped to [0, 1] here).
        pose: (T, 3) pitch, yaw, roll in degrees.
        mask: (T,) True where the face was found.
        start: (T,) frame start times in seconds.
        end: (T,) frame end times, or one frame length in seconds added to ``start``.
        extra: optional (T, E) backend columns placed after the face flag.

    Returns:
        Modality (T, 24 + E) float32 with mask ``mask`` and times (T, 2).

    Raises:
        MsekitError: the arrays disagree in length or width (a backend bug).

    Examples:
        >>> m = finish_rows(np.full((2, 20), np.nan), np.zeros((2, 3)), np.array([True, False]),
        ...                 np.array([0.0, 0.5]), 0.5)
        >>> m.data.shape, float(m.data[0, 23]), float(m.data[1].sum()), m.times[1].tolist()
        ((2, 24), 1.0, 0.0, [0.5, 1.0])
    """
    mask = np.asarray(mask, bool).reshape(-1)  # (T,)
    n = len(mask)
    aus = np.asarray(aus, np.float64).reshape(n, -1)  # (T, 20)
    pose = np.asarray(pose, np.float64).reshape(n, -1)  # (T, 3)
    if aus.shape[1] != len(AU_NAMES) or pose.shape[1] != len(POSE_NAMES):
        raise MsekitError(f"finish_rows: need (T, {len(AU_NAMES)}) AUs and (T, 3) pose, got "
                          f"{aus.shape} and {pose.shape}")
    parts = [np.clip(aus, 0.0, 1.0), pose, mask[:, None].astype(np.float64)]
    if extra is not None:
        parts.append(np.asarray(extra, np.float64).reshape(n, -1))  # (T, E)
    data = np.nan_to_num(np.concatenate(parts, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    data[~mask] = 0.0  # the store's contract: a masked row holds zeros only
    start = np.asarray(start, np.float64).reshape(-1)  # (T,)
    stop = start + end if np.isscalar(end) else np.asarray(end, np.float64).reshape(-1)
    if len(start) != n or len(stop) != n:
        raise MsekitError(f"finish_rows: {n} rows but {len(start)} start / {len(stop)} end times")
    return Modality(data.astype(np.float32), np.stack([start, stop], axis=1), mask)
