"""PyTorch access to a feature store for training: ``StoreDataset``, ``collate``, ``make_loader``.

Reads are lazy and random-access; nothing beyond the per-sample index (ids, text, labels,
offsets) is held in memory, so memory does not grow with the size of the frame arrays. Each
DataLoader worker opens the file itself on first use (a file handle must not cross a fork).

Fast path: the views written by ``msekit align`` (``/views/<mode>``) are uncompressed and
contiguous, so a sample's frames sit at a computable byte offset of the .h5 file. A batch is
read with one ``os.preadv`` per sample and modality straight into the padded batch tensor, in
file order (``__getitems__``, which the DataLoader calls with a whole batch of indices; the reads
are in ``msekit.fastio``). Stores without a packed view fall back to h5py reads of the gzip
chunks, which is correct but slow.

The batch dict is the contract of docs/architecture.md::

    {"ids": list[str], "text": list[str],
     "audio": FloatTensor (B, Ta, Da) | None, "audio_lengths": LongTensor (B,),   # 0 = missing
     "video": FloatTensor (B, Tv, Dv) | None, "video_lengths": LongTensor (B,),
     "labels": FloatTensor (B,) (regression) | LongTensor (B,) (class index) | None}

Padding, masked frames (no face, no frame in a word window) and missing modalities hold zeros,
also after normalization. A batch's time axis is at least 1 long so that it is never empty.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msekit.errors import MsekitError
from msekit.fastio import empty_batch, read_h5, read_packed, tune_malloc
from msekit.labels import TASKS, infer_task, sorted_label_names  # noqa: F401  (re-exported)
from msekit.splits import make_splits
from msekit.store import open_store_file, ragged_offsets
from msekit.views import ALIGN_MODES, compute_norm, read_norm, view_source

MODALITIES = ("audio", "video")
IGNORE_INDEX = -100  # class index of an unlabelled sample in a partly labelled batch


@dataclass
class ViewConfig:
    """How a store is turned into training batches (the same in training and prediction).

    Attributes:
        align: 'none' (own sequence per modality), 'word' or 'rate' (views written by
            ``msekit align``).
        max_len: truncation length: None (keep all), an int for every modality, a dict
            modality -> int, or 'auto' (mean + 3 std of the train split's lengths, as MMSA).
        pad_to: 'batch' (longest in the batch, capped by max_len) or 'max_len' (always max_len,
            as MMSA's fixed arrays).
        normalize: standardize each feature with the train split's mean and std.
        norm: explicit statistics, modality -> (mean (D,), std (D,)), e.g. those an adapter was
            trained with; they win over ``normalize``. Either way frames become
            ``(x - mean) / std`` where the store's frame mask is set, and stay 0 elsewhere.
        modalities: the modalities read (None: all the store has); the others come as missing
            (lengths 0, zero frames), e.g. ``[]`` for a text-only run.
        task: 'regression' or 'classification'; None infers it from the labels.
        label_names: class names in index order; None sorts the labels (numerically when all
            are integers, so MELD's '0'..'6' stay in order).
        unknown_labels: "error" refuses labels outside label_names; "ignore" treats them as
            missing (inference with an adapter trained on a subset of the classes); "drop"
            leaves those samples out (training on a subset of the classes).
        split_seed: make grouped splits on the fly with this seed instead of the stored ones
            (grouped as ``msekit.splits`` says).
        split_ratios: train, valid, test shares for ``split_seed``.
    """

    align: str = "none"
    max_len: int | dict[str, int] | str | None = None
    pad_to: str = "batch"
    normalize: bool = False
    norm: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    modalities: list[str] | None = None
    task: str | None = None
    label_names: list[str] | None = None
    unknown_labels: str = "error"  # "error" | "ignore" | "drop"
    split_seed: int | None = None
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise MsekitError(f"ViewConfig.align must be one of {ALIGN_MODES}; got {self.align!r}")
        if self.pad_to not in ("batch", "max_len"):
            raise MsekitError(f"ViewConfig.pad_to must be 'batch' or 'max_len'; got {self.pad_to!r}")
        if self.unknown_labels not in ("error", "ignore", "drop"):
            raise MsekitError("ViewConfig.unknown_labels must be 'error', 'ignore' or 'drop'; "
                              f"got {self.unknown_labels!r}")
        if self.task is not None and self.task not in TASKS:
            raise MsekitError(f"ViewConfig.task must be one of {TASKS} or None; got {self.task!r}")
        ml = self.max_len
        ok = (ml is None or ml == "auto" or (isinstance(ml, int) and ml > 0)
              or (isinstance(ml, dict) and all(isinstance(v, int) and v > 0 for v in ml.values())))
        if not ok:
            raise MsekitError("ViewConfig.max_len must be None, 'auto', a positive int or a dict "
                              f"modality -> positive int; got {ml!r}")
        if self.pad_to == "max_len" and ml is None:
            raise MsekitError("ViewConfig.pad_to='max_len' needs a max_len (an int, a dict or 'auto')")


@dataclass
class _Source:
    """Where one modality's frames of the view live, for the selected samples."""

    dim: int
    offset: np.ndarray  # (N,) first row of each selected sample
    length: np.ndarray  # (N,) its rows
    data_pos: int | None  # byte offset of the contiguous data array, None: read through h5py
    mask_pos: int | None
    group: str  # HDF5 path of the modality group in the view


class _Prepared(Sequence):
    """The items of one batch, built lazily from the batch dict that was read for them.

    ``collate`` returns ``.batch`` as is; indexing gives the items (views into the batch).
    """

    def __init__(self, batch: dict[str, Any], labels: list, masks: dict[str, np.ndarray | None]) -> None:
        self.batch, self._labels, self._masks = batch, labels, masks

    def __len__(self) -> int:
        return len(self.batch["ids"])

    def __getitem__(self, b: int) -> dict[str, Any]:  # type: ignore[override]
        if not 0 <= b < len(self):
            raise IndexError(b)
        bt = self.batch
        item = {"id": bt["ids"][b], "text": bt["text"][b], "label": self._labels[b]}
        if "text_ids" in bt:
            item["text_ids"] = bt["text_ids"][b]
        for m in MODALITIES:
            x = bt[m]
            n = int(bt[f"{m}_lengths"][b])
            mask = self._masks.get(m)
            item[m] = None if x is None else x[b, :n].numpy()
            item[f"{m}_mask"] = None if mask is None else mask[b, :n]
        return item


class EmptySplitError(MsekitError):
    """A split that was asked for holds no samples (of the requested classes)."""


class StoreDataset(Dataset):
    """One split of a store as a map-style Dataset of items, for ``collate``.

    Args:
        path: the store (.h5).
        split: 'train', 'valid', 'test', or None for every sample.
        view: the ViewConfig.
        tune: call ``tune_malloc`` in every process that reads (see there why).

    Attributes:
        task: 'regression' or 'classification'.
        label_names: class names in index order (classification), else None.
        feature_dims: modality -> features per frame, for the modalities the store has.
        max_len: modality -> resolved truncation length (None: none).
        norm: modality -> (mean, std) applied at load (``view.norm`` or ``view.normalize``).
        read_modalities: the modalities read (the others come as missing).

    Raises:
        EmptySplitError: the split holds no samples (of the requested classes).
        MsekitError: a missing view, an unknown split, labels outside ``label_names``.
    """

    def __init__(self, path: str | os.PathLike, split: str | None = None,
                 view: ViewConfig | None = None, tune: bool = True) -> None:
        self.path = Path(path)
        self.view = view or ViewConfig()
        self.split = split
        self.view_tune_malloc = tune
        self._fd: int | None = None
        self._h5: h5py.File | None = None
        self._pid = -1
        self.token_ids: list[np.ndarray] | None = None  # stored ids per row (read_token_ids)
        with open_store_file(self.path) as f:
            self._load_index(f)

    def read_token_ids(self) -> None:
        """Hand out the store's token ids (``batch["text_ids"]``) instead of only the texts: for a
        model whose tokenizer is the store's (``msekit.tokenfp``), which then skips tokenizing."""
        with open_store_file(self.path) as f:
            n = int(f.attrs["n_samples"])
            off, ln = ragged_offsets(f["samples"], "token", n)  # (n,), (n,)
            ids = f["text/token_ids"][:]  # (K,) every sample's ids, concatenated
        self.token_ids = [ids[off[i]:off[i] + ln[i]] for i in self.rows]  # (K_i,) each

    # -- index, read once in the main process -----------------------------------------------------
    def _load_index(self, f: h5py.File) -> None:
        v = self.view
        n = int(f.attrs["n_samples"])
        s = f["samples"]
        ids = s["id"].asstr()[:n].tolist()
        splits = s["split"].asstr()[:n].tolist()
        if v.split_seed is not None:
            splits = make_splits(ids, s["group"].asstr()[:n].tolist(), v.split_ratios, v.split_seed,
                                 s["source"].asstr()[:n].tolist())
        select = np.array([x == self.split for x in splits], bool) if self.split is not None else np.ones(n, bool)
        all_labels = s["label"].asstr()[:n].tolist()
        keep = self._set_labels(all_labels, select)
        if self.split is not None and not keep.any():
            have = sorted({x for x in splits if x})
            hint = (f"the store has splits {have}" if have else
                    "the store has no splits: run `msekit split` (`msekit train` makes one itself)")
            what = f"of the classes {self.label_names} " if v.unknown_labels == "drop" else ""
            raise EmptySplitError(f"{self.path}: no samples {what}in split {self.split!r}; {hint}")
        rows = np.flatnonzero(keep)
        self.rows = rows
        self.ids = [ids[i] for i in rows]
        text = s["text"].asstr()[:n]
        self.texts = [str(text[i]) for i in rows]
        idx_prefix, data_prefix = view_source(f, v.align)
        mods = [m for m in json.loads(f.attrs["modalities"]) if m in MODALITIES]
        train = np.array([x == "train" for x in splits], bool)
        self.sources: dict[str, _Source] = {}
        self.max_len: dict[str, int | None] = {}
        for m in mods:
            g = f[f"{data_prefix}{m}"]
            off, ln = ragged_offsets(f[f"{idx_prefix}samples"], m, n)  # (n,), (n,)
            data, mask = g["data"], g["mask"]
            packed = data.chunks is None and data.compression is None and mask.chunks is None
            self.sources[m] = _Source(
                dim=data.shape[1], offset=off[rows].astype(np.int64), length=ln[rows].astype(np.int64),
                data_pos=data.id.get_offset() if packed else None,
                mask_pos=mask.id.get_offset() if packed else None, group=g.name)
            self.max_len[m] = self._resolve_max_len(m, ln, train)
        self.feature_dims = {m: src.dim for m, src in self.sources.items()}
        self.read_modalities = [m for m in self.sources if v.modalities is None or m in v.modalities]
        self.norm = self._norm(f, splits, train)
        self._torch_norm = {m: (torch.from_numpy(np.asarray(mu, np.float32)),
                                torch.from_numpy(1.0 / np.asarray(sd, np.float32)))
                            for m, (mu, sd) in self.norm.items()}

    def _norm(self, f: h5py.File, splits: list[str], train: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The statistics applied at load: the explicit ones, else the train split's."""
        v = self.view
        if v.norm is not None:
            stats = {m: (np.asarray(mu, np.float32), np.asarray(sd, np.float32)) for m, (mu, sd) in v.norm.items()}
        elif v.normalize and self.read_modalities:
            stats = read_norm(f, v.align, splits)
            if stats is None:
                if not train.any():
                    raise MsekitError(f"{self.path}: normalize needs a train split to compute "
                                      "statistics from; run `msekit split` or set split_seed")
                stats = {m: x[:2] for m, x in compute_norm(f, v.align, train).items()}
        else:
            return {}
        return {m: stats[m] for m in self.read_modalities if m in stats}

    def _set_labels(self, all_labels: list[str], select: np.ndarray) -> np.ndarray:
        """Sets task, label_names and labels of the selected samples; returns the selection
        (narrowed to the known classes with ``unknown_labels='drop'``)."""
        v = self.view
        self.task = v.task or infer_task(all_labels)
        self.label_names: list[str] | None = None
        if self.task == "classification":
            self.label_names = list(v.label_names) if v.label_names else sorted_label_names(all_labels)
            index = {name: k for k, name in enumerate(self.label_names)}
            if v.unknown_labels == "drop":
                select = select & np.array([x in index for x in all_labels], bool)
            labels = [all_labels[i] for i in np.flatnonzero(select)]
            unknown = sorted({x for x in labels if x and x not in index})
            if unknown and v.unknown_labels == "ignore":  # e.g. an adapter trained on a subset
                labels = [x if x in index else "" for x in labels]
            elif unknown:
                raise MsekitError(f"labels {unknown[:5]} are not in label_names {self.label_names}")
            self.labels: list[float | int | None] = [index[x] if x else None for x in labels]
        else:
            labels = [all_labels[i] for i in np.flatnonzero(select)]
            try:
                self.labels = [float(x) if x else None for x in labels]
            except ValueError as e:
                raise MsekitError(f"{self.path}: task 'regression' but a label is not a number ({e})") from None
        return select

    def _resolve_max_len(self, m: str, lengths: np.ndarray, train: np.ndarray) -> int | None:
        ml = self.view.max_len
        if ml is None:
            return None
        if isinstance(ml, int):
            return ml
        if isinstance(ml, dict):
            return ml.get(m)
        use = lengths[train & (lengths > 0)] if train.any() else lengths[lengths > 0]
        if not len(use):
            return 1
        return max(1, int(math.ceil(use.mean() + 3 * use.std())))

    # -- reading, per worker -----------------------------------------------------------------------
    def _handles(self) -> None:
        if self._pid != os.getpid():  # first use in this process (a fresh DataLoader worker)
            if self.view_tune_malloc:
                tune_malloc()
            self._fd = os.open(self.path, os.O_RDONLY)
            self._h5 = None
            self._pid = os.getpid()

    def _h5file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = open_store_file(self.path)
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_fd=None, _h5=None, _pid=-1)
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", -1) == os.getpid() and self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __len__(self) -> int:
        return len(self.rows)

    def _cap(self, m: str, k: np.ndarray) -> np.ndarray:
        ln = self.sources[m].length[k]
        cap = self.max_len[m]
        return np.minimum(ln, cap) if cap is not None else ln

    def _read(self, m: str, k: np.ndarray, need_mask: bool = True
              ) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
        """Frames of selected samples ``k`` into one zero-padded tensor.

        The frame masks are read only when needed (normalization, single items): masked frames
        already hold zeros in the store.

        Returns:
            (x (B, T, D) float32, valid (B, T) bool or None, lengths (B,) int64).
        """
        need_mask = need_mask or m in self._torch_norm
        src = self.sources[m]
        lens = self._cap(m, k)
        cap = self.max_len[m]
        T = cap if self.view.pad_to == "max_len" else max(1, int(lens.max()) if len(lens) else 1)
        B, D = len(k), src.dim
        x = empty_batch((B, T, D))
        xa = x.numpy()
        valid = np.zeros((B, T), np.uint8)
        offs = src.offset[k]
        if src.data_pos is not None:
            read_packed(self._fd, xa, valid, lens, offs, src.data_pos, src.mask_pos if need_mask else None)
        else:
            read_h5(self._h5file()[src.group], xa, valid, lens, offs)
        if m in self._torch_norm:
            mean, inv_std = self._torch_norm[m]
            x.sub_(mean).mul_(inv_std)  # (B, T, D); padding and masked frames re-zeroed below
            x.mul_(torch.from_numpy(valid).unsqueeze(-1))
        return x, valid.view(bool) if need_mask else None, lens

    def _read_batch(self, k: np.ndarray, need_mask: bool = True) -> _Prepared:
        self._handles()
        B = len(k)
        batch: dict[str, Any] = {"ids": [self.ids[i] for i in k], "text": [self.texts[i] for i in k]}
        if self.token_ids is not None:
            batch["text_ids"] = [self.token_ids[i].tolist() for i in k]
        masks: dict[str, np.ndarray | None] = {}
        for m in MODALITIES:
            if m not in self.sources:
                batch[m], batch[f"{m}_lengths"] = None, torch.zeros(B, dtype=torch.long)
                continue
            if m not in self.read_modalities:  # left out by the view: read as missing
                batch[m] = torch.zeros((B, 1, self.sources[m].dim))  # (B, 1, D)
                batch[f"{m}_lengths"], masks[m] = torch.zeros(B, dtype=torch.long), None
                continue
            x, masks[m], lens = self._read(m, k, need_mask)
            batch[m], batch[f"{m}_lengths"] = x, torch.from_numpy(lens.astype(np.int64))
        labels = [self.labels[i] for i in k]
        batch["labels"] = labels_tensor(labels, self.task)
        return _Prepared(batch, labels, masks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample: id, text, label (float, class index or None), and per modality the
        frames (T, D) float32 and their validity ``<m>_mask`` (T,) (None: the store lacks it)."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._read_batch(np.array([i % len(self)]))[0]

    def __getitems__(self, indices: list[int]) -> _Prepared:
        """A whole batch at once (the DataLoader calls this): reads in file order straight into
        the padded batch; ``collate`` then returns that batch without copying. The items'
        ``<m>_mask`` is None here unless normalization needed the masks."""
        return self._read_batch(np.asarray(indices, np.int64), need_mask=False)

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """The module's ``collate``, for ``DataLoader(ds, collate_fn=ds.collate)``."""
        return collate(items)


def labels_tensor(labels: list[float | int | None], task: str) -> torch.Tensor | None:
    """(B,) labels; None when no sample is labelled. In a partly labelled batch the unlabelled
    ones are NaN (regression) or IGNORE_INDEX (classification)."""
    if all(x is None for x in labels):
        return None
    if task == "classification":
        return torch.tensor([IGNORE_INDEX if x is None else int(x) for x in labels], dtype=torch.long)
    return torch.tensor([math.nan if x is None else float(x) for x in labels], dtype=torch.float32)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of items (from ``StoreDataset``) into the batch dict of docs/architecture.md.

    Items prepared by ``StoreDataset.__getitems__`` already carry their batch, which is returned
    as is.
    """
    ready = getattr(items, "batch", None)
    if ready is not None:
        return ready
    B = len(items)
    batch: dict[str, Any] = {"ids": [it["id"] for it in items], "text": [it["text"] for it in items]}
    if items and all("text_ids" in it for it in items):
        batch["text_ids"] = [list(it["text_ids"]) for it in items]
    for m in MODALITIES:
        arrays = [it.get(m) for it in items]
        if all(a is None for a in arrays):
            batch[m], batch[f"{m}_lengths"] = None, torch.zeros(B, dtype=torch.long)
            continue
        dim = next(a.shape[1] for a in arrays if a is not None)
        lens = [0 if a is None else len(a) for a in arrays]
        x = torch.zeros((B, max(1, max(lens)), dim), dtype=torch.float32)  # (B, T, D)
        for b, a in enumerate(arrays):
            if lens[b]:
                x[b, :lens[b]] = torch.from_numpy(np.asarray(a, np.float32))
        batch[m], batch[f"{m}_lengths"] = x, torch.tensor(lens, dtype=torch.long)
    labels = [it.get("label") for it in items]
    task = "classification" if any(isinstance(x, int | np.integer) for x in labels) else "regression"
    batch["labels"] = labels_tensor(labels, task)
    return batch


def make_loader(path: str | os.PathLike, split: str | None = None, batch_size: int = 8,
                shuffle: bool = False, num_workers: int = 0, view: ViewConfig | None = None,
                seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader over one split of a store, yielding the batch dict; ``loader.dataset`` is
    the StoreDataset (task, label_names, feature_dims).

    Args:
        path: the store.
        split: 'train', 'valid', 'test' or None (all).
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (seeded by ``seed``).
        num_workers: worker processes; each opens the store itself.
        view: the ViewConfig.
        seed: seeds the shuffle order.
        drop_last: drop a last incomplete batch.
    """
    ds = StoreDataset(path, split, view)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate, generator=gen, drop_last=drop_last,
                      persistent_workers=num_workers > 0)
