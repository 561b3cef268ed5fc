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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit.errors import MsekitError, StoreError
from msekit.labels import SPLIT_NAMES  # noqa: F401  (re-exported)
from msekit.pooling import (  # noqa: F401 - re-exported: cleaning and pooling of one sample
    _has_times,
    align_sample,
    clean,
    overlap_weights,
    pool,
    rate_windows,
)

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
        if mode == "word" and n and mods and not s["word_length"][:n].any():
            raise MsekitError(f"{path}: no sample has word timings, so --mode word has nothing to "
                              "align to; give word timings at extraction or use --mode rate")
        lengths = _view_lengths(f, mode, mods, n, rate)
        # The view is new space (the old one is freed only after the rename): check it fits.
        check_free(path, sum(int(lengths[m].sum()) * (4 * dims[m] + 17) for m in mods), n)
        tmp = f"{VIEWS_GROUP}/.{mode}.tmp"
        if tmp in f:
            del f[tmp]
        g = f.create_group(tmp)
        out = _create_view(f, g, mods, lengths, dims, n, summary)
        _fill_view(f, path, mode, rate, mods, lengths, out, summary, progress)
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


def _view_lengths(f: h5py.File, mode: str, mods: list[str], n: int,
                  rate: float) -> dict[str, np.ndarray]:
    """The first pass: the number of rows of every sample in the view (fixes the contiguous
    sizes); modality -> (N,) int64."""
    s = f["samples"]
    word_len = s["word_length"][:n]
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
        _rate_lengths(f, mods, n, rate, lengths)
    return lengths


def _rate_lengths(f: h5py.File, mods: list[str], n: int, rate: float,
                  lengths: dict[str, np.ndarray]) -> None:
    """Fill ``lengths`` with the windows of every present modality in 'rate' mode."""
    dur = f["samples/duration"][:n]
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


def _create_view(f: h5py.File, g: h5py.Group, mods: list[str], lengths: dict[str, np.ndarray],
                 dims: dict[str, int], n: int, summary: dict[str, Any]) -> dict[str, tuple]:
    """The view's (empty) datasets in ``g``: modality -> (data, times, mask, (N,) offsets)."""
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
    return out


def _fill_view(f: h5py.File, path: str | Path, mode: str, rate: float, mods: list[str],
               lengths: dict[str, np.ndarray], out: dict[str, tuple], summary: dict[str, Any],
               progress: Callable[[int, int], None] | None) -> None:
    """The second pass: align every block of samples and write its rows into the view."""
    n = int(f.attrs["n_samples"])
    s = f["samples"]
    ids = s["id"].asstr()[:n].tolist()
    dur = s["duration"][:n]
    for i0 in range(0, n, _BLOCK):
        i1 = min(n, i0 + _BLOCK)
        blocks = {m: _read_block(f[m], *_block_rows(f, m, i0, i1)) for m in mods}
        words = _block_words(f, i0, i1) if mode == "word" else [None] * (i1 - i0)
        written: dict[str, list[Modality]] = {m: [] for m in mods}
        for k in range(i1 - i0):
            i = i0 + k
            sample_mods = {m: blocks[m][k] for m in mods}
            if mode == "word" and not len(words[k]) and any(len(x.data) for x in sample_mods.values()):
                summary["samples_without_words"] += 1
            if mode == "none":
                for m, x in sample_mods.items():
                    summary["cleaned_values"][m] += clean(x.data, x.mask)[2]
            aligned = align_sample(sample_mods, mode, words[k], float(dur[i]), rate,
                                   sample_id=ids[i])
            for m in mods:
                x = aligned[m]
                if len(x.data) != lengths[m][i]:
                    raise StoreError(f"{path}: view {mode} row count mismatch for sample {i}")
                written[m].append(x)
        for m in mods:
            summary["masked_rows"][m] += _write_rows(out[m], i0, written[m])
        if progress:
            progress(i1, n)


def _block_words(f: h5py.File, i0: int, i1: int) -> list[np.ndarray]:
    """(W_i, 2) word intervals of the samples i0..i1, read with one slice."""
    woff, wlen = _block_rows(f, "word", i0, i1)
    wa, wb = (int(woff[0]), int(woff[-1] + wlen[-1])) if len(woff) else (0, 0)
    wblock = f["text/word_times"][wa:wb] if wb > wa else np.zeros((0, 2))
    return [wblock[int(o) - wa:int(o) - wa + int(ln)] for o, ln in zip(woff, wlen, strict=True)]


def _write_rows(target: tuple, i0: int, written: list[Modality]) -> int:
    """Write the aligned rows of consecutive samples from sample i0 on; returns the masked rows."""
    ds_data, ds_times, ds_mask, off = target
    rows = [x for x in written if len(x.data)]
    if not rows:
        return 0
    a = int(off[i0])
    b = a + sum(len(x.data) for x in rows)
    ds_data[a:b] = np.concatenate([x.data for x in rows])
    ds_times[a:b] = np.concatenate([x.times for x in rows])
    mk = np.concatenate([x.mask for x in rows])
    ds_mask[a:b] = mk.astype(np.uint8)
    return int(len(mk) - mk.sum())


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
