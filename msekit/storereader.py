"""Reading a store: ``StoreReader``, lock-free random access to the committed samples.

Import it from ``msekit.store``; the layout is described there and in docs/store-schema.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit.errors import StoreError
from msekit.storefile import _open, _stamp
from msekit.storeschema import (
    FAILURE_FIELDS,
    OPTIONAL_STR_FIELDS,
    SAMPLE_STR_FIELDS,
    TEXT_F8_FIELDS,
    TEXT_STR_FIELDS,
    Modality,
    Sample,
    ragged_offsets,
)


class StoreReader:
    """Random access to the committed samples of a store; use as a context manager.

    Examples:
        >>> with StoreReader("feats.h5") as store:          # doctest: +SKIP
        ...     video = store.modality(0, "video")          # Modality with data (T, 20+3+1)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        for attempt in range(100):  # a writer committed while we read the index: read it again
            before = _stamp(self.path)
            self.f = _open(self.path, "r")
            self._read_index()
            self._seen = _stamp(self.path)
            same_journal = bool(before[2:]) and before[2] is not None and self._seen[2:] == before[2:]
            if self._seen == before or same_journal or attempt == 99:
                break
            self.f.close()
            time.sleep(0.02)

    def _fresh(self) -> h5py.File:
        """The open file, reopened when a writer committed since (its cached chunk index may
        point at space the writer has freed and reused); committed rows never change."""
        stamp = _stamp(self.path)
        if stamp != self._seen:
            self.f.close()
            self.f = _open(self.path, "r")
            self._seen = stamp
        return self.f

    def _read_index(self) -> None:
        self.n = int(self.f.attrs["n_samples"])
        self.settings: dict[str, Any] = json.loads(self.f.attrs["settings"])
        self.settings_hash: str = str(self.f.attrs["settings_hash"])
        self.modalities: list[str] = json.loads(self.f.attrs["modalities"])
        s = self.f["samples"]
        # The index is small (a few ints and strings per sample): read it once.
        self.ids: list[str] = s["id"].asstr()[: self.n].tolist()
        self._index = {i: k for k, i in enumerate(self.ids)}
        self._offsets = {p: ragged_offsets(s, p, self.n) for p in [*self.modalities, "token", "word"]}

    def __len__(self) -> int:
        return self.n

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._index

    def index(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise StoreError(f"{self.path}: no sample with id {sample_id!r}") from None

    def column(self, name: str) -> np.ndarray:
        """A per-sample column of /samples (e.g. 'label', 'split', 'duration', 'audio_length')."""
        ds = self._fresh()["samples"][name]
        return ds.asstr()[: self.n] if ds.dtype == object else ds[: self.n]

    def feature_names(self, modality: str) -> list[str]:
        return json.loads(self.f[modality].attrs["feature_names"])

    def modality_attrs(self, modality: str) -> dict[str, Any]:
        return dict(self.f[modality].attrs)

    def lengths(self, modality: str) -> np.ndarray:
        return self._offsets[modality][1]

    def _slice(self, prefix: str, i: int) -> slice:
        off, length = self._offsets[prefix]
        return slice(int(off[i]), int(off[i] + length[i]))

    def modality(self, i: int, modality: str) -> Modality:
        """Frames of sample ``i`` for one modality (length 0 when it is missing)."""
        sl = self._slice(modality, i)
        g = self._fresh()[modality]
        return Modality(g["data"][sl], g["times"][sl], g["mask"][sl].astype(bool))

    def sample(self, key: int | str) -> Sample:
        i = self.index(key) if isinstance(key, str) else key
        f = self._fresh()
        s, t = f["samples"], f["text"]
        wsl = self._slice("word", i)
        return Sample(
            **{name: s[name].asstr()[i] for name in SAMPLE_STR_FIELDS + OPTIONAL_STR_FIELDS
               if name in s},
            duration=float(s["duration"][i]),
            token_ids=t["token_ids"][self._slice("token", i)],
            words=t["words"].asstr()[wsl].tolist(),
            word_times=t["word_times"][wsl],
            modalities={m: self.modality(i, m) for m in self.modalities},
            word_probs=t["word_prob"][wsl] if "word_prob" in t else None,
            **{k: (s[k].asstr()[i] if k in TEXT_STR_FIELDS else float(s[k][i]))
               for k in (*TEXT_STR_FIELDS, *TEXT_F8_FIELDS) if k in s},
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.n):
            yield self.sample(i)

    def failures(self) -> list[dict[str, str]]:
        """The latest failure of every item that has no committed sample."""
        g = self.f["failures"]
        cols = {name: g[name].asstr()[:].tolist() for name in FAILURE_FIELDS}
        latest: dict[str, dict[str, str]] = {}
        for row in zip(*cols.values(), strict=True):
            rec = dict(zip(FAILURE_FIELDS, row, strict=True))
            if rec["id"] not in self._index:
                latest[rec["id"]] = rec
        return list(latest.values())

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
