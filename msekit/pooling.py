"""Cleaning and pooling of frame sequences: one sample's modalities onto words or rate windows.

Each frame counts with its seconds of overlap with a window; frames masked in the store do
not count; a window that no valid frame overlaps is masked and holds zeros, never NaN (see
``msekit.views`` for the alignment modes). Import these from ``msekit.views``.
"""

from __future__ import annotations

import math

import numpy as np

from msekit.errors import MsekitError
from msekit.store import Modality


def clean(data: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Replace -inf, inf and NaN by 0 and mask frames that hold no finite value at all.

    Args:
        data: (T, D) features.
        mask: (T,) validity; all valid when None.

    Returns:
        (data, mask, number of values replaced). ``data`` is a float32 copy only when needed.
    """
    data = np.asarray(data, np.float32)
    mask = np.ones(len(data), bool) if mask is None else np.asarray(mask, bool)
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        data = np.where(finite, data, np.float32(0))
        if data.shape[1]:
            mask = mask & finite.any(axis=1)
    return data, mask, bad


def overlap_weights(frames: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Seconds of overlap between every window and every frame.

    Args:
        frames: (T, 2) [start, end) of each frame.
        windows: (W, 2) [start, end) of each window (a word, or a step of a rate grid).

    Returns:
        (W, T) float64 weights. A frame of zero duration (a time point) weighs 1 in the window
        that holds its start, so point samples pool to their plain mean.
    """
    fs, fe = frames[:, 0], frames[:, 1]
    ws, we = windows[:, 0:1], windows[:, 1:2]
    w = np.minimum(we, fe[None]) - np.maximum(ws, fs[None])  # (W, T)
    np.clip(w, 0.0, None, out=w)
    point = fe <= fs
    if point.any():
        w[:, point] = ((fs[None, point] >= ws) & (fs[None, point] < we)).astype(np.float64)
    return w


def pool(mod: Modality, windows: np.ndarray, max_cells: int = 4_000_000) -> Modality:
    """Overlap-weighted mean of a modality's valid frames in each window.

    Args:
        mod: the frames (masked frames are ignored).
        windows: (W, 2) window intervals in seconds.
        max_cells: bound on the (W, T) weight matrix held at once.

    Returns:
        A Modality with one row per window; ``mask`` is False (and the row zeros) where no valid
        frame overlaps the window.
    """
    windows = np.asarray(windows, np.float64).reshape(-1, 2)
    n_win, dim = len(windows), mod.data.shape[1]
    out = np.zeros((n_win, dim), np.float32)
    valid = np.zeros(n_win, bool)
    keep = mod.mask
    times, data = mod.times[keep], mod.data[keep].astype(np.float64)
    if len(times) and n_win:
        step = max(1, max_cells // len(times))
        for a in range(0, n_win, step):
            w = overlap_weights(times, windows[a:a + step])  # (w, T)
            total = w.sum(axis=1)
            has = total > 0
            pooled = w @ data  # (w, D)
            out[a:a + step][has] = (pooled[has] / total[has, None]).astype(np.float32)
            valid[a:a + step] = has
    return Modality(out, windows, valid)


def rate_windows(start: float, end: float, rate: float) -> np.ndarray:
    """(W, 2) windows of 1/rate seconds covering [start, end)."""
    n = max(0, math.ceil((end - start) * rate - 1e-9))
    k = np.arange(n, dtype=np.float64)
    return np.stack([start + k / rate, start + (k + 1) / rate], axis=1).reshape(-1, 2)


def _has_times(mod: Modality) -> bool:
    return len(mod.times) <= 1 or bool(np.any(mod.times != 0))


def align_sample(mods: dict[str, Modality], mode: str, words: np.ndarray | None = None,
                 duration: float = 0.0, rate: float = 10.0, sample_id: str = "") -> dict[str, Modality]:
    """Align one sample's modalities.

    Args:
        mods: modality name -> frames (length 0 = missing; stays missing).
        mode: 'none' (clean only), 'word' or 'rate'.
        words: (W, 2) word intervals, for 'word'.
        duration: media seconds, for 'rate' (the windows also cover every frame).
        rate: windows per second, for 'rate'.
        sample_id: named in errors.

    Raises:
        MsekitError: frames carry no times (e.g. imported from an MMSA pickle) in word/rate mode.
    """
    out: dict[str, Modality] = {}
    present = {m: x for m, x in mods.items() if len(x.data)}
    if mode != "none":
        for m, x in present.items():
            if not _has_times(x):
                raise MsekitError(f"sample {sample_id!r}: {m} frames have no times (all zero), so "
                                  f"they cannot be aligned by '{mode}'; use --mode none")
    if mode == "rate" and present:
        start = min(float(x.times[:, 0].min()) for x in present.values())
        end = max(max(float(x.times[:, 1].max()) for x in present.values()), start + duration)
        grid = rate_windows(start, end, rate)
    for m, x in mods.items():
        data, mask, _ = clean(x.data, x.mask)
        x = Modality(data, x.times, mask)
        if mode == "none" or not len(x.data):
            out[m] = x if mode == "none" else Modality.empty(x.data.shape[1])
        elif mode == "word":
            out[m] = pool(x, words if words is not None else np.zeros((0, 2)))
        else:
            out[m] = pool(x, grid)
    return out
