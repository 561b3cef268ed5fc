"""CMU-MultimodalSDK computational sequences (.csd) into a store.

A .csd is an HDF5 file with one root group (its name, e.g. 'COVAREP', 'FACET 4.2', 'words',
'All Labels') holding ``data/<video id>/features`` (T, D) and ``data/<video id>/intervals``
(T, 2) seconds, and ``metadata/<key>`` (one JSON-encoded string each: 'root name',
'dimension names', 'computational sequence description', ...).

One file per role: audio, video, words (features are byte strings; 'sp' marks silence) and
labels (one row per opinion segment; the first column is the sentiment). With labels, every
labelled segment becomes a sample ``<video>[<k>]`` holding the frames and words that overlap it
(times stay in seconds of the whole video, as in the SDK); without labels, every video is one
sample. The group is the video. The role of a file is taken from an explicit 'role=path' or
guessed from its root name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit.errors import MsekitError
from msekit.formats import generic_names, write_samples
from msekit.store import Modality, Sample
from msekit.views import clean

ROLES = ("audio", "video", "words", "labels")
_GUESS = {"covarep": "audio", "opensmile": "audio", "opensmile_eb10": "audio", "audio": "audio",
          "facet": "video", "facet 4.2": "video", "facet_4.2": "video", "openface": "video",
          "openface_2": "video", "video": "video", "words": "words", "labels": "labels",
          "all labels": "labels", "opinion segment labels": "labels", "sentiment labels": "labels"}


class CSD:
    """An open computational sequence: ``.root``, ``.metadata`` (dict), ``.ids``, ``.get(id)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as e:
            raise MsekitError(f"{self.path}: not a readable .csd (HDF5) file ({e})") from None
        roots = [k for k in self.f if isinstance(self.f[k], h5py.Group) and "data" in self.f[k]]
        if len(roots) != 1:
            raise MsekitError(f"{self.path}: a .csd has one root group with 'data'; found {list(self.f)}")
        self.root = roots[0]
        g = self.f[self.root]
        self.metadata: dict[str, Any] = {}
        for k in g.get("metadata", {}):
            raw = g["metadata"][k][()]
            raw = raw[0] if isinstance(raw, np.ndarray) and raw.shape else raw
            raw = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                self.metadata[k] = json.loads(raw)
            except json.JSONDecodeError:
                self.metadata[k] = raw
        self.ids = sorted(g["data"])

    def get(self, vid: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(features (T, ...), intervals (T, 2)) of one video, None when it has none.

        Raises:
            MsekitError: the video's group lacks 'features' or 'intervals', or their rows or
                the intervals' shape disagree (named with the shapes found).
        """
        d = self.f[self.root]["data"]
        if vid not in d:
            return None
        g = d[vid]
        where = f"{self.path}: {self.root}/data/{vid}"
        if not isinstance(g, h5py.Group) or "features" not in g or "intervals" not in g:
            keys = sorted(g) if isinstance(g, h5py.Group) else type(g).__name__
            raise MsekitError(f"{where} needs 'features' and 'intervals'; found {keys}; the file is "
                              "not a complete computational sequence")
        feats, iv = g["features"][()], np.asarray(g["intervals"][()], np.float64)
        if iv.ndim != 2 or iv.shape[1] != 2 or len(iv) != len(feats):
            raise MsekitError(f"{where}: 'intervals' has shape {iv.shape} and 'features' "
                              f"{feats.shape}; expected (T, 2) and (T, D) with the same T")
        return feats, iv

    def dim(self) -> int:
        """Features per frame (the first video's; every video must agree)."""
        dims = {}
        for vid in self.ids:
            g = self.f[self.root]["data"][vid]
            if isinstance(g, h5py.Group) and "features" in g:
                dims[vid] = int(np.asarray(g["features"].shape[1:]).prod())
        if len(set(dims.values())) > 1:
            first = next(iter(dims))
            odd = next(v for v in dims if dims[v] != dims[first])
            raise MsekitError(f"{self.path}: {self.root}/data/{odd}/features has {dims[odd]} "
                              f"features per frame, {first} has {dims[first]}; expected the same D")
        return next(iter(dims.values()), 0)

    def names(self) -> list[str]:
        names = self.metadata.get("dimension names")
        if isinstance(names, list) and len(names) == self.dim():
            return [str(x) for x in names]
        return generic_names(self.dim())

    def close(self) -> None:
        self.f.close()


def _roles(inputs: list[str]) -> dict[str, CSD]:
    out: dict[str, CSD] = {}
    for spec in inputs:
        role, _, p = spec.rpartition("=") if "=" in spec else ("", "", spec)
        c = CSD(p)
        role = role or _GUESS.get(c.root.lower()) or _GUESS.get(Path(p).stem.lower(), "")
        if role not in ROLES:
            c.close()
            raise MsekitError(f"{p}: cannot tell what root {c.root!r} holds; write it as "
                              f"audio=, video=, words= or labels=<file>")
        if role in out:
            raise MsekitError(f"two .csd files for {role}: {out[role].path} and {p}")
        out[role] = c
    return out


def _overlap(iv: np.ndarray, a: float, b: float) -> np.ndarray:
    return (iv[:, 0] < b) & (iv[:, 1] > a) if b > a else (iv[:, 0] >= a) & (iv[:, 0] <= b)


def import_csd(inputs: list[str], out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Import computational sequences into a new store.

    Args:
        inputs: .csd paths, each optionally prefixed with its role ('audio=COVAREP.csd').
        out: the store to create.
        overwrite: replace ``out``.

    Raises:
        MsekitError: unreadable files, unknown roles, no audio/video/words/labels at all.
    """
    seqs = _roles(inputs)
    mods = {m: seqs[m] for m in ("audio", "video") if m in seqs}
    words, labels = seqs.get("words"), seqs.get("labels")
    cleaned = {m: 0 for m in mods}
    vids = sorted(set().union(*(c.ids for c in seqs.values())) if labels is None else labels.ids)

    def word_list(vid: str, a: float, b: float) -> tuple[list[str], np.ndarray]:
        got = words.get(vid) if words else None
        if got is None:
            return [], np.zeros((0, 2))
        feats, iv = got
        keep = _overlap(iv, a, b)
        toks = [(x[0] if np.ndim(x) else x) for x in feats[keep]]
        toks = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in toks]
        ivk = iv[keep]
        sel = [k for k, t in enumerate(toks) if t != "sp"]
        return [toks[k] for k in sel], ivk[sel].reshape(-1, 2)

    def samples():
        for vid in vids:
            frames = {m: c.get(vid) for m, c in mods.items()}
            if labels is not None:
                lf, liv = labels.get(vid) or (np.zeros((0, 1)), np.zeros((0, 2)))
                segments = [(f"{vid}[{k}]", float(liv[k, 0]), float(liv[k, 1]),
                             repr(float(np.asarray(lf[k]).reshape(-1)[0]))) for k in range(len(liv))]
            else:
                ends = [x[1][:, 1].max() for x in frames.values() if x is not None and len(x[1])]
                segments = [(vid, 0.0, float(max(ends)) if ends else 0.0, "")]
            for sid, a, b, label in segments:
                modal = {}
                for m, got in frames.items():
                    if got is None:
                        continue
                    feats, iv = got
                    keep = _overlap(iv, a, b)
                    x, mask, bad = clean(np.asarray(feats[keep], np.float32).reshape(int(keep.sum()), -1))
                    cleaned[m] += bad
                    modal[m] = Modality(x, iv[keep], mask)
                ws, wt = word_list(vid, a, b)
                yield Sample(id=sid, text=" ".join(ws), label=label, group=vid, source=vid,
                             duration=b - a, words=ws, word_times=wt, modalities=modal)

    settings = {"source_format": "csd",
                "files": {r: c.path.name for r, c in seqs.items()},
                "roots": {r: c.root for r, c in seqs.items()},
                "segments": "label intervals" if labels is not None else "whole videos",
                "frame_times": "seconds within the video"}
    dims = {m: c.dim() for m, c in mods.items()}
    try:
        n = write_samples(out, settings, {m: c.names() for m, c in mods.items()}, samples(), overwrite)
    finally:
        for c in seqs.values():
            c.close()
    return {"format": "csd", "samples": n, "videos": len(vids),
            "feature_dims": dims, "cleaned_values": cleaned}
