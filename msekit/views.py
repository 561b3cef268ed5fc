"""Training views of a feature store: alignment, normalization statistics and splits.

Three alignment modes (``ALIGN_MODES``):

- ``none``: every modality keeps its own frame sequence (what the MSE-Adapter uses). The view
  ``/views/none`` is a packed copy of the raw sequences: uncompressed, contiguous, non-finite
  values cleaned, so that the Dataset reads a sample with one ``os.pread``.
- ``word``: every modality is pooled onto the transcript's word intervals. Each frame counts
  with its seconds of overlap with the word (CMU-MultimodalSDK takes an unweighted mean of the
  frames that touch the word, so a frame that only grazes a word weighs as much as one inside
  it). Frames masked in the store (no face) do not count; a word that no valid frame overlaps
  is masked and holds zeros, never NaN.
- ``rate``: every modality is pooled onto windows of one common rate (e.g. 10 Hz), with the same
  overlap weights.

Views are written by ``align_store`` beside the raw sequences (same ragged layout, see
``msekit.store``), built in a temporary group and renamed when complete. Normalization
statistics (per feature mean and std of valid frames of the train split) go to
``/norm/<mode>/<modality>``. Splits are made in ``msekit.splits``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit.errors import MsekitError, StoreError
from msekit.labels import SPLIT_NAMES  # noqa: F401  (re-exported)

# Splits moved to msekit.splits; re-exported for the importers of msekit.views.
from msekit.splits import group_of, make_splits, parse_ratios, split_store  # noqa: F401
from msekit.store import (
    NORM_GROUP,
    VIEWS_GROUP,
    Modality,
    check_free,
    open_store_file,
    ragged_offsets,
    replace_group,
)

ALIGN_MODES = ("none", "word", "rate")
_BLOCK = 512  # samples handled per block when building a view


def check_mode(mode: str) -> str:
    if mode not in ALIGN_MODES:
        raise MsekitError(f"align mode must be one of {', '.join(ALIGN_MODES)}; got {mode!r}")
    return mode


# --- cleaning and pooling ----------------------------------------------------------------------

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


# --- building views in the store ----------------------------------------------------------------

def _block_rows(f: h5py.File, prefix: str, i0: int, i1: int, group: str = "") -> tuple[np.ndarray, np.ndarray]:
    s = f[f"{group}samples"]
    if not group:  # raw rows: offsets checked against the lengths (stores of msekit 0.1)
        off, ln = ragged_offsets(s, prefix, i1)
        return off[i0:i1], ln[i0:i1]
    return s[f"{prefix}_offset"][i0:i1], s[f"{prefix}_length"][i0:i1]


def _read_block(g: h5py.Group, off: np.ndarray, length: np.ndarray) -> list[Modality]:
    """Frames of consecutive samples, read with one slice per array."""
    if not len(off):
        return []
    a, b = int(off[0]), int(off[-1] + length[-1])
    data, times, mask = g["data"][a:b], g["times"][a:b], g["mask"][a:b].astype(bool)
    res = []
    for o, n in zip(off - a, length, strict=True):
        sl = slice(int(o), int(o + n))
        res.append(Modality(data[sl], times[sl], mask[sl]))
    return res


def align_store(path: str | Path, mode: str, rate: float = 10.0,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the aligned view ``/views/<mode>`` into the store (replacing an older one).

    The view is built in a temporary group and renamed when complete, so an interrupted run
    leaves the previous view (or none) intact. Normalization statistics of the train split are
    computed for the view when the store has a train split.

    Args:
        path: the store (.h5).
        mode: 'none' (packed, cleaned raw sequences), 'word' or 'rate'.
        rate: windows per second for 'rate'.
        progress: called with (done, total) samples.

    Returns:
        A summary: mode, settings, rows per modality, masked rows, cleaned values, samples
        without words (word mode).

    Raises:
        MsekitError: bad mode or rate, no word timings in the whole store for 'word', frames
        without times for 'word'/'rate'.
    """
    check_mode(mode)
    if mode == "rate" and not rate > 0:
        raise MsekitError(f"--rate must be > 0 (windows per second); got {rate}")
    settings = {"mode": mode, "weighting": "overlap_seconds", "mask": "store_frame_mask"}
    if mode == "rate":
        settings["rate"] = float(rate)
    summary: dict[str, Any] = {"mode": mode, "settings": settings, "rows": {}, "masked_rows": {},
                               "cleaned_values": {}, "samples_without_words": 0}
    with open_store_file(path, "a") as f:
        n = int(f.attrs["n_samples"])
        mods: list[str] = json.loads(f.attrs["modalities"])
        s = f["samples"]
        dims = {m: f[m]["data"].shape[1] for m in mods}
        word_len = s["word_length"][:n]
        ids = s["id"].asstr()[:n].tolist()
        dur = s["duration"][:n]
        if mode == "word" and n and mods and not word_len.any():
            raise MsekitError(f"{path}: no sample has word timings, so --mode word has nothing to "
                              "align to; give word timings at extraction or use --mode rate")
        # First pass: the number of rows of every sample in the view (fixes the contiguous sizes).
        lengths = {}
        for m in mods:
            raw_len = s[f"{m}_length"][:n]
            if mode == "none":
                lengths[m] = raw_len.copy()
            elif mode == "word":
                lengths[m] = np.where(raw_len > 0, word_len, 0)
            else:
                lengths[m] = np.zeros(n, np.int64)
        if mode == "rate" and mods:
            for i0 in range(0, n, _BLOCK):
                i1 = min(n, i0 + _BLOCK)
                spans = []
                for m in mods:
                    off, ln = _block_rows(f, m, i0, i1)
                    spans.append([(x.times[:, 0].min(), x.times[:, 1].max()) if len(x.times) else None
                                  for x in _read_block_times(f[m], off, ln)])
                for k in range(i1 - i0):
                    got = [sp[k] for sp in spans if sp[k] is not None]
                    if got:
                        a = min(g[0] for g in got)
                        b = max(max(g[1] for g in got), a + dur[i0 + k])
                        nwin = len(rate_windows(a, b, rate))
                        for m, sp in zip(mods, spans, strict=True):
                            if sp[k] is not None:
                                lengths[m][i0 + k] = nwin
        # The view is new space (the old one is freed only after the rename): check it fits.
        check_free(path, sum(int(lengths[m].sum()) * (4 * dims[m] + 17) for m in mods), n)
        tmp = f"{VIEWS_GROUP}/.{mode}.tmp"
        if tmp in f:
            del f[tmp]
        g = f.create_group(tmp)
        gs = g.create_group("samples")
        out = {}
        for m in mods:
            ln = lengths[m].astype(np.int64)
            off = np.concatenate([[0], np.cumsum(ln)[:-1]]).astype(np.int64) if n else ln
            gs.create_dataset(f"{m}_offset", data=off)
            gs.create_dataset(f"{m}_length", data=ln)
            rows = int(ln.sum())
            gm = g.create_group(m)
            # Contiguous and uncompressed: readers compute byte offsets (ds.id.get_offset()).
            out[m] = (gm.create_dataset("data", (rows, dims[m]), "f4"),
                      gm.create_dataset("times", (rows, 2), "f8"),
                      gm.create_dataset("mask", (rows,), "u1"), off)
            for k, v in f[m].attrs.items():
                gm.attrs[k] = v
            summary["rows"][m] = rows
            summary["masked_rows"][m] = 0
            summary["cleaned_values"][m] = 0
        wt = f["text/word_times"]
        for i0 in range(0, n, _BLOCK):
            i1 = min(n, i0 + _BLOCK)
            blocks = {m: _read_block(f[m], *_block_rows(f, m, i0, i1)) for m in mods}
            if mode == "word":
                woff, wlen = _block_rows(f, "word", i0, i1)
                wa, wb = (int(woff[0]), int(woff[-1] + wlen[-1])) if len(woff) else (0, 0)
                wblock = wt[wa:wb] if wb > wa else np.zeros((0, 2))
            written = {m: [] for m in mods}
            for k in range(i1 - i0):
                i = i0 + k
                sample_mods = {m: blocks[m][k] for m in mods}
                words = None
                if mode == "word":
                    o = int(woff[k]) - wa
                    words = wblock[o:o + int(wlen[k])]
                    if not len(words) and any(len(x.data) for x in sample_mods.values()):
                        summary["samples_without_words"] += 1
                if mode == "none":
                    for m, x in sample_mods.items():
                        summary["cleaned_values"][m] += clean(x.data, x.mask)[2]
                aligned = align_sample(sample_mods, mode, words, float(dur[i]), rate,
                                       sample_id=ids[i])
                for m in mods:
                    x = aligned[m]
                    if len(x.data) != lengths[m][i]:
                        raise StoreError(f"{path}: view {mode} row count mismatch for sample {i}")
                    written[m].append(x)
            for m in mods:
                ds_data, ds_times, ds_mask, off = out[m]
                rows = [x for x in written[m] if len(x.data)]
                if not rows:
                    continue
                a = int(off[i0])
                b = a + sum(len(x.data) for x in rows)
                ds_data[a:b] = np.concatenate([x.data for x in rows])
                ds_times[a:b] = np.concatenate([x.times for x in rows])
                mk = np.concatenate([x.mask for x in rows])
                ds_mask[a:b] = mk.astype(np.uint8)
                summary["masked_rows"][m] += int(len(mk) - mk.sum())
            if progress:
                progress(i1, n)
        g.attrs.update(mode=mode, settings=json.dumps(settings, sort_keys=True), n_samples=n,
                       store_settings_hash=str(f.attrs["settings_hash"]),
                       modalities=json.dumps(mods),
                       created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        f.flush()
        replace_group(f, tmp, f"{VIEWS_GROUP}/{mode}")
        has_train = bool(n) and "train" in set(s["split"].asstr()[:n].tolist())
    if has_train and mods:
        summary["norm"] = write_norm(path, mode)
    return summary


def _read_block_times(g: h5py.Group, off: np.ndarray, length: np.ndarray) -> list[Modality]:
    if not len(off):
        return []
    a, b = int(off[0]), int(off[-1] + length[-1])
    times = g["times"][a:b]
    return [Modality(np.zeros((int(n), 0), np.float32), times[int(o):int(o + n)], np.ones(int(n), bool))
            for o, n in zip(off - a, length, strict=True)]


def view_source(f: h5py.File, mode: str) -> tuple[str, str]:
    """(prefix of the samples index, prefix of the modality groups) of a view.

    'none' falls back to the raw sequences when the packed view was not written.

    Raises:
        MsekitError: the view was not written, or was written before samples were added.
    """
    check_mode(mode)
    name = f"{VIEWS_GROUP}/{mode}"
    if name in f:
        n = int(f.attrs["n_samples"])
        if int(f[name].attrs["n_samples"]) != n:
            raise MsekitError(f"the '{mode}' view of {f.filename} covers "
                              f"{int(f[name].attrs['n_samples'])} samples but the store has {n}; "
                              f"rerun `msekit align {f.filename} --mode {mode}`")
        return f"{name}/", f"{name}/"
    if mode == "none":
        return "", ""
    raise MsekitError(f"{f.filename} has no '{mode}' view; run `msekit align {f.filename} "
                      f"--mode {mode}` first")


# --- normalization --------------------------------------------------------------------------------

def split_hash(splits: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(splits).encode()).hexdigest()[:16]


def compute_norm(f: h5py.File, mode: str, select: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per-feature mean and std over the valid, finite frames of the selected samples.

    Args:
        f: the open store.
        mode: the view.
        select: (N,) bool, the samples to use (the train split).

    Returns:
        modality -> (mean (D,), std (D,), frames used). A feature with std < 1e-6 (constant, e.g.
        the face flag) gets std 1 so that it is only centred.
    """
    idx_prefix, data_prefix = view_source(f, mode)
    mods: list[str] = json.loads(f.attrs["modalities"])
    n = len(select)
    res = {}
    for m in mods:
        off, ln = ragged_offsets(f[f"{idx_prefix}samples"], m, n)  # (n,), (n,)
        g = f[f"{data_prefix}{m}"]
        dim = g["data"].shape[1]
        total, sq, cnt = np.zeros(dim), np.zeros(dim), np.zeros(dim)
        for i0 in range(0, n, _BLOCK):
            i1 = min(n, i0 + _BLOCK)
            sel = select[i0:i1] & (ln[i0:i1] > 0)
            if not sel.any():
                continue
            a, b = int(off[i0]), int(off[i1 - 1] + ln[i1 - 1])
            rows = np.zeros(b - a, bool)
            for o, k in zip(off[i0:i1][sel] - a, ln[i0:i1][sel], strict=True):
                rows[int(o):int(o + k)] = True
            rows &= g["mask"][a:b].astype(bool)
            x = g["data"][a:b][rows].astype(np.float64)
            ok = np.isfinite(x)
            x = np.where(ok, x, 0.0)
            total += x.sum(0)
            sq += (x * x).sum(0)
            cnt += ok.sum(0)
        mean = total / np.maximum(cnt, 1)
        var = np.maximum(sq / np.maximum(cnt, 1) - mean * mean, 0.0)
        std = np.sqrt(var)
        std[std < 1e-6] = 1.0
        res[m] = (mean.astype(np.float32), std.astype(np.float32), int(cnt.max()) if dim else 0)
    return res


def write_norm(path: str | Path, mode: str, split: str = "train") -> dict[str, int]:
    """Compute the statistics of one view from one split and store them in /norm/<mode>.

    Returns:
        modality -> frames used.

    Raises:
        MsekitError: the split has no samples.
    """
    with open_store_file(path, "a") as f:
        n = int(f.attrs["n_samples"])
        splits = f["samples/split"].asstr()[:n].tolist()
        select = np.array([x == split for x in splits], bool)
        if not select.any():
            raise MsekitError(f"{path}: no samples in split {split!r} to compute normalization from; "
                              "run `msekit split` first")
        stats = compute_norm(f, mode, select)
        tmp = f"{NORM_GROUP}/.{mode}.tmp"
        if tmp in f:
            del f[tmp]
        g = f.create_group(tmp)
        for m, (mean, std, used) in stats.items():
            gm = g.create_group(m)
            gm.create_dataset("mean", data=mean)
            gm.create_dataset("std", data=std)
            gm.attrs["frames"] = used
        g.attrs.update(split=split, view=mode, split_hash=split_hash(splits),
                       view_created_utc=str(f[f"{VIEWS_GROUP}/{mode}"].attrs["created_utc"])
                       if f"{VIEWS_GROUP}/{mode}" in f else "raw")
        f.flush()
        replace_group(f, tmp, f"{NORM_GROUP}/{mode}")
    return {m: v[2] for m, v in stats.items()}


def read_norm(f: h5py.File, mode: str, splits: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Stored statistics of a view when they match the current splits and view, else None."""
    name = f"{NORM_GROUP}/{mode}"
    if name not in f:
        return None
    g = f[name]
    view = f"{VIEWS_GROUP}/{mode}"
    created = str(f[view].attrs["created_utc"]) if view in f else "raw"
    if g.attrs.get("split_hash") != split_hash(splits) or g.attrs.get("view_created_utc") != created:
        return None
    return {m: (g[m]["mean"][:], g[m]["std"][:]) for m in g}
