"""MMSA-format pickles (MOSI/MOSEI ``aligned_50.pkl`` / ``unaligned_50.pkl``, SIMS
``unaligned_39.pkl``, SIMS-V2): import into a store, export a store back.

Layout: ``{'train' | 'valid' | 'test': {key: array}}`` with, per split of N samples,
``raw_text`` (N,) str, ``audio`` (N, Ta, Da), ``vision`` (N, Tv, Dv), ``id`` (N,) str,
``regression_labels`` (N,) float (and ``regression_labels_T/_A/_V`` for SIMS),
``classification_labels``, ``audio_lengths`` / ``vision_lengths`` (N,) (unaligned files),
``text`` (GloVe (N, L, 300) or BERT ids (N, 3, L)), ``text_bert``, ``annotations``.
Audio may hold -inf and vision NaN: they become 0, and a frame with no finite value is masked.
Text features are tied to one tokenizer, so they are not imported (the LLM tokenizes raw_text).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError
from msekit.formats import atomic_write, generic_names, write_samples
from msekit.formats.safe_pickle import load_pickle
from msekit.store import Modality, Sample, StoreReader, replace_sample_column
from msekit.views import clean, group_of

MMSA_SPLITS = ("train", "valid", "test")
EXTRA_LABELS = ("regression_labels_T", "regression_labels_A", "regression_labels_V")
_MODS = {"audio": "audio", "video": "vision"}  # store modality -> MMSA key


def _as_str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _label_str(x: Any) -> str:
    return repr(float(x))  # exact round trip of float32 and float64 values


def _shape(x: Any) -> tuple | str:
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(shape)
    return (len(x),) if isinstance(x, list | tuple) else type(x).__name__


def _check_layout(path: Path, data: dict, splits: list[str]) -> None:
    """Refuse a pickle whose arrays do not have the MMSA shapes, naming the key and shapes.

    Raises:
        MsekitError: a split that is not a dict, a missing key, a per-sample array of another
            length than ``id``, a frame array that is not (N, T, D) or whose D differs between
            splits.
    """
    dims: dict[str, int] = {}
    for k in splits:
        d = data[k]
        if not isinstance(d, dict):
            raise MsekitError(f"{path}: split {k!r} is a {type(d).__name__}, expected a dict of "
                              "arrays (id, raw_text, audio, vision, regression_labels, ...)")
        for key in ("id", "raw_text"):
            if key not in d:
                raise MsekitError(f"{path}: split {k!r} has no {key!r} key (keys: {sorted(d)})")
        n = len(d["id"]) if hasattr(d["id"], "__len__") else -1
        for key, want in (("raw_text", 1), ("audio", 3), ("vision", 3), ("audio_lengths", 1),
                          ("vision_lengths", 1), ("regression_labels", None),
                          ("classification_labels", None), *((e, None) for e in EXTRA_LABELS)):
            if key not in d:
                continue
            shape = _shape(d[key])
            ok = isinstance(shape, tuple) and len(shape) >= 1 and shape[0] == n
            if want == 3:
                ok = ok and len(shape) == 3
            expect = f"(N={n}, T, D)" if want == 3 else f"(N={n},)"
            if not ok:
                raise MsekitError(f"{path}: split {k!r} key {key!r} has shape {shape}, expected "
                                  f"{expect} like 'id'; the file is not in the MMSA layout")
            if want == 3 and dims.setdefault(key, shape[2]) != shape[2]:
                raise MsekitError(f"{path}: split {k!r} key {key!r} has {shape[2]} features per "
                                  f"frame, other splits {dims[key]}; expected the same D")
        for key in ("audio", "vision"):
            lk = f"{key}_lengths"
            if key in d and lk in d and len(d[lk]) and int(np.max(d[lk])) > _shape(d[key])[1]:
                raise MsekitError(f"{path}: split {k!r} key {lk!r} goes up to {int(np.max(d[lk]))}, "
                                  f"longer than {key!r} (T={_shape(d[key])[1]})")


def _samples(data: dict[str, Any], splits: list[str], mods: dict[str, str],
             label_key: str | None) -> Iterator[Sample]:
    """The pickle's samples, split by split, each cut to its length and cleaned."""
    for k in splits:
        d = data[k]
        for i in range(len(d["id"])):
            sid = _as_str(d["id"][i])
            modal = {}
            for m, key in mods.items():
                arr = d[key][i]
                lk = f"{key}_lengths"
                t = int(d[lk][i]) if lk in d else len(arr)
                x, mask, _ = clean(arr[:t])
                modal[m] = Modality(x, np.zeros((t, 2)), mask)
            label = _label_str(d[label_key][i]) if label_key == "regression_labels" else (
                str(int(d[label_key][i])) if label_key else "")
            yield Sample(id=sid, text=_as_str(d["raw_text"][i]), label=label, split=k,
                         group=group_of(sid), modalities=modal)


def import_mmsa(path: str | Path, out: str | Path, trust_pickle: bool = False,
                overwrite: bool = False, loaded: Any = None) -> dict[str, Any]:
    """Import an MMSA pickle into a new store.

    Args:
        path: the .pkl.
        out: the store to create.
        trust_pickle: unrestricted unpickling.
        overwrite: replace ``out``.
        loaded: the already loaded pickle (saves a second load).

    Returns:
        Summary: samples per split, dims, cleaned values per modality.

    Raises:
        MsekitError: not the MMSA layout (names the missing key).
    """
    path = Path(path)
    data = loaded if loaded is not None else load_pickle(path, trust_pickle)
    if not isinstance(data, dict) or not any(k in data for k in MMSA_SPLITS):
        raise MsekitError(f"{path}: not an MMSA pickle (expected a dict with train/valid/test)")
    splits = [k for k in MMSA_SPLITS if k in data]
    _check_layout(path, data, splits)
    ref = data[splits[0]]
    mods = {m: key for m, key in _MODS.items() if key in ref}
    dims = {m: int(np.asarray(ref[key]).shape[2]) for m, key in mods.items()}
    lens = {m: int(np.asarray(ref[key]).shape[1]) for m, key in mods.items()}
    cleaned = {m: 0 for m in mods}
    for k in splits:
        for m, key in mods.items():
            arr = data[k][key]
            cleaned[m] += int(arr.size - np.count_nonzero(np.isfinite(arr)))
    extra = [e for e in EXTRA_LABELS if e in ref]
    label_key = ("regression_labels" if "regression_labels" in ref else
                 "classification_labels" if "classification_labels" in ref else None)
    settings = {
        "source_format": "mmsa", "file": path.name, "aligned": path.name.startswith("aligned"),
        "padded_lengths": {m: lens[m] for m in mods}, "label_key": label_key,
        "extra_labels": extra, "frame_times": "unknown (MMSA keeps none)",
        "dropped_keys": sorted({k for k in ref if k in ("text", "text_bert", "annotations")}),
        "cleaned_values": cleaned,
    }

    names = {m: generic_names(dims[m]) for m in mods}

    def extra_columns(tmp: Path) -> None:
        for e in extra:
            vals = [_label_str(x) for k in splits for x in data[k][e]]
            replace_sample_column(tmp, f"label_{e[-1]}", vals, {"source": e})

    n = write_samples(out, settings, names, _samples(data, splits, mods, label_key), overwrite,
                      finish=extra_columns)
    return {"format": "mmsa", "samples": n, "splits": {k: len(data[k]["id"]) for k in splits},
            "feature_dims": dims, "cleaned_values": cleaned, "extra_labels": extra}


def export_mmsa(store: str | Path, out: str | Path, pad: dict[str, int] | None = None) -> dict[str, Any]:
    """Write a store's raw sequences as an MMSA pickle (zero-padded at the end).

    Args:
        store: the store.
        out: the .pkl to write.
        pad: modality -> padded length; default the length recorded at import, or the longest.

    Returns:
        Summary: samples per split, padded lengths.

    Raises:
        MsekitError: samples without a split (run ``msekit split`` first).
    """
    with StoreReader(store) as r:
        splits = r.column("split").tolist()
        if any(s not in MMSA_SPLITS for s in splits):
            bad = sorted({s for s in splits if s not in MMSA_SPLITS})
            raise MsekitError(f"{store}: samples with split {bad}; MMSA needs train/valid/test "
                              "(run `msekit split` first)")
        mods = [m for m in _MODS if m in r.modalities]
        recorded = r.settings.get("padded_lengths", {}) if r.settings.get("source_format") == "mmsa" else {}
        T = {}
        for m in mods:
            T[m] = int((pad or {}).get(m) or max(int(recorded.get(m, 0)), int(r.lengths(m).max(initial=0)), 1))
        labels = r.column("label").tolist()
        texts = r.column("text").tolist()
        extras = {e: r.column(f"label_{e[-1]}").tolist() for e in EXTRA_LABELS
                  if f"label_{e[-1]}" in r.f["samples"]}
        from msekit.dataset import infer_task, sorted_label_names

        task = infer_task(labels)
        names = sorted_label_names(labels) if task == "classification" else None
        result: dict[str, Any] = {}
        for split in MMSA_SPLITS:
            idx = [i for i, s in enumerate(splits) if s == split]
            if not idx:
                continue
            d: dict[str, Any] = {"id": np.array([r.ids[i] for i in idx], dtype=object),
                                 "raw_text": np.array([texts[i] for i in idx], dtype=object)}
            for m in mods:
                dim = len(r.feature_names(m))
                arr = np.zeros((len(idx), T[m], dim), np.float32)
                ln = np.zeros(len(idx), np.int64)
                for j, i in enumerate(idx):
                    x = r.modality(i, m).data[: T[m]]
                    arr[j, : len(x)] = x
                    ln[j] = len(x)
                d[_MODS[m]] = arr
                d[f"{_MODS[m]}_lengths"] = ln
            if task == "regression":
                d["regression_labels"] = np.array([float(labels[i]) if labels[i] else np.nan
                                                   for i in idx], np.float32)
            else:
                d["classification_labels"] = np.array([names.index(labels[i]) for i in idx], np.int64)
            for e, col in extras.items():
                d[e] = np.array([float(col[i]) if col[i] else np.nan for i in idx], np.float32)
            result[split] = d
    atomic_write(out, lambda fh: pickle.dump(result, fh, protocol=4))
    return {"format": "mmsa", "splits": {k: len(v["id"]) for k, v in result.items()},
            "padded_lengths": T, "label_names": json.dumps(names) if names else None}
