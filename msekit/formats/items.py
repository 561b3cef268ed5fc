"""The per-split item-list pickles the MSE-Adapter authors use for MELD and CHERMA.

Each file (``train.pkl``, ``valid.pkl`` or ``dev.pkl``, ``test.pkl``) is a list of items::

    {'features': {'audio': (Ta, Da), 'video': (Tv, Dv), 'text': str,
                  'audio_len': int, 'video_len': int},
     'label': <emotion name, e.g. 'neutral' or '愤怒'>}

Arrays may be zero-padded past ``audio_len`` / ``video_len``; only the real frames are kept.
An item may carry an 'id'; otherwise the id is '<split>_<index>'. The split comes from the file
name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError
from msekit.formats import generic_names, split_from_name, write_samples
from msekit.formats.safe_pickle import load_pickle
from msekit.store import Modality, Sample
from msekit.views import clean

_MODS = ("audio", "video")


def _check_item(item: Any, path: Path, k: int) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("features"), dict) or "label" not in item:
        raise MsekitError(f"{path}: item {k} is not {{'features': {{...}}, 'label': ...}}")
    return item["features"]


def import_items(paths: list[Path], out: str | Path, trust_pickle: bool = False,
                 overwrite: bool = False) -> dict[str, Any]:
    """Import item-list pickles (one per split) into a new store.

    Raises:
        MsekitError: a file whose split cannot be told from its name, a malformed item,
            feature dims that differ between items.
    """
    loaded = []
    for p in map(Path, paths):
        split = split_from_name(p)
        if split is None:
            raise MsekitError(f"{p}: cannot tell the split from the name; call it train/valid/test.pkl")
        data = load_pickle(p, trust_pickle)
        if not isinstance(data, list):
            raise MsekitError(f"{p}: not an item list (got {type(data).__name__})")
        loaded.append((p, split, data))
    dims: dict[str, int] = {}
    for p, _, data in loaded:
        for k, item in enumerate(data):
            feats = _check_item(item, p, k)
            for m in _MODS:
                if feats.get(m) is not None:
                    shape = np.shape(feats[m])
                    if len(shape) != 2:
                        raise MsekitError(f"{p}: item {k} key 'features.{m}' has shape {shape}, "
                                          "expected (T, D)")
                    length = feats.get(f"{m}_len", shape[0])
                    if not isinstance(length, int | np.integer) or not 0 <= length <= shape[0]:
                        raise MsekitError(f"{p}: item {k} key 'features.{m}_len' is {length!r}, "
                                          f"expected an int from 0 to T={shape[0]}")
                    d = int(shape[1])
                    if dims.setdefault(m, d) != d:
                        raise MsekitError(f"{p}: item {k} has {d} {m} features, earlier items {dims[m]}")
    cleaned = {m: 0 for m in dims}
    counts: dict[str, int] = {}

    def samples():
        for _, split, data in loaded:
            counts[split] = counts.get(split, 0) + len(data)
            for k, item in enumerate(data):
                feats = item["features"]
                modal = {}
                for m in dims:
                    arr = feats.get(m)
                    if arr is None:
                        continue
                    arr = np.asarray(arr, np.float32).reshape(len(arr), -1)
                    t = int(feats.get(f"{m}_len", len(arr)))
                    x, mask, bad = clean(arr[:t])
                    cleaned[m] += bad
                    modal[m] = Modality(x, np.zeros((len(x), 2)), mask)
                text = feats.get("text", "")
                tokens = np.zeros(0, np.int32)
                if not isinstance(text, str):
                    tokens, text = np.asarray(text, np.int32).reshape(-1), ""
                sid = str(item.get("id") or f"{split}_{k:05d}")
                yield Sample(id=sid, text=text, label=str(item["label"]), split=split, group=sid,
                             token_ids=tokens, modalities=modal)

    settings = {"source_format": "items", "files": [p.name for p, _, _ in loaded],
                "frame_times": "unknown (item lists keep none)"}
    n = write_samples(out, settings, {m: generic_names(d) for m, d in dims.items()}, samples(), overwrite)
    return {"format": "items", "samples": n, "splits": counts, "feature_dims": dims,
            "cleaned_values": cleaned}
