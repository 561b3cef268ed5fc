"""The feature store: one HDF5 file holding every sample's features, text, label and split.

Layout (schema version 1; docs/store-schema.md is the reference for readers in other languages):

    /                      attrs: schema_version, msekit_version, settings (JSON), settings_hash,
                                  n_samples (committed rows), modalities (JSON list), created_utc
    /samples/id            (N,) utf-8 str   unique sample id (any characters, '/' included)
    /samples/source        (N,) utf-8 str   media file the sample came from ('' when imported)
    /samples/source_hex    (N,) utf-8 str   hex of the path's bytes when it is not UTF-8 (source
                                            then holds it escaped, %XX per byte), else ''
    /samples/text          (N,) utf-8 str   transcript
    /samples/label         (N,) utf-8 str   label as given ('' when unlabelled)
    /samples/split         (N,) utf-8 str   train / valid / test / ''
    /samples/group         (N,) utf-8 str   source video or speaker, keeps clips of one video together
    /samples/duration      (N,) float64     media seconds
    /samples/<m>_offset    (N,) int64       first row of sample i in /<m>/data, for m in modalities
    /samples/<m>_length    (N,) int64       its number of rows (0: modality missing for this sample)
    /samples/token_offset, token_length, word_offset, word_length   the same for /text
    /<m>/data              (R, D) float32   frames of every sample, concatenated; chunked, gzip
    /<m>/times             (R, 2) float64   [start, end) seconds of each frame within its media
    /<m>/mask              (R,) uint8       1 = valid frame (e.g. a face was found), 0 = masked
                           attrs: feature_names (JSON list), extractor, extractor_version, config (JSON)
    /text/token_ids        (K,) int32       LLM token ids of each sample's text, concatenated
    /text/words            (W,) utf-8 str   words with timings, when given
    /text/word_times       (W, 2) float64
    /text/word_prob        (W,) float32     ASR word probability (NaN for given / aligned words)
    /samples/{text_source, asr_model, language}  (N,) str   given | asr | '', ASR model, language
    /samples/{asr_logprob, asr_no_speech}        (N,) f8    ASR avg log-prob, no-speech prob
    /failures/{id,path,stage,reason}  (F,) utf-8 str   per-item failures, append-only

Ragged arrays are concatenated per modality with an offsets index, so a store of 20,000 samples
has a few dozen datasets rather than 100,000 tiny ones.

Crash and disk-full safety: a writer writes through ``msekit.journal.JournaledFile``, which
saves the old bytes of every committed page it overwrites in ``<store>.journal``; a commit
appends rows, bumps the root attribute ``n_samples``, flushes, fsyncs and deletes the journal.
A failed write (full disk) or a killed writer is undone from the journal, so the store is
always at its last commit. Free space is checked before each commit (with a margin,
``MSEKIT_FREE_MARGIN`` bytes). One writer at a time (``<store>.lock`` holds its pid); readers
take no lock and see the committed samples while a writer works (through the journal during a
commit). Rows past ``n_samples`` (stores of older msekit versions killed mid-commit) are
ignored by readers and truncated by the next writer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit import __version__
from msekit.errors import StoreError
from msekit.journal import JournaledFile, journal_path, recover
from msekit.storecolumns import (  # noqa: F401 - re-exported: in-place rewrites of a store
    NORM_GROUP,
    VIEWS_GROUP,
    _attr_value,
    open_store_file,
    replace_group,
    replace_sample_column,
    write_column,
)
from msekit.storefile import (  # noqa: F401 - re-exported: the store's write-safety API
    SCHEMA_VERSION,
    DiskFullError,
    StoreFile,
    _lock,
    _open,
    _stamp,
    check_free,
    disk_full,
    open_writable,
    write_error,
)
from msekit.storereader import StoreReader  # noqa: F401 - re-exported
from msekit.storeschema import (  # noqa: F401 - re-exported: the row types and column names
    FAILURE_FIELDS,
    OPTIONAL_STR_FIELDS,
    SAMPLE_STR_FIELDS,
    STR,
    TEXT_F8_FIELDS,
    TEXT_STR_FIELDS,
    Modality,
    Sample,
    ragged_offsets,
    settings_hash,
)

_ROW_CHUNK = 4096  # rows per chunk of frame arrays: ~400 KB for 25-d float32


def _estimate(samples: list[Sample], failures: list[tuple[str, ...]]) -> int:
    """Bytes a commit may need: new rows, the journal's copies and rewritten partial chunks."""
    rows = 0
    for x in samples:
        rows += sum(m.data.nbytes + m.times.nbytes + m.mask.size for m in x.modalities.values())
        rows += np.asarray(x.token_ids).nbytes + np.asarray(x.word_times).nbytes
        rows += sum(len(w) + 16 for w in x.words)
        rows += sum(len(getattr(x, k)) + 16 for k in SAMPLE_STR_FIELDS) + 64
    rows += sum(len("".join(r)) + 64 for r in failures)
    return 2 * rows + 32 * 8192


def _append(ds: h5py.Dataset, rows: np.ndarray | list) -> None:
    n = ds.shape[0]
    ds.resize(n + len(rows), axis=0)
    if len(rows):
        ds[n:] = rows


class StoreWriter:
    """Appends samples to a store, creating it if needed; use as a context manager.

    Args:
        path: the .h5 file.
        settings: the extraction settings; a store made with other settings is refused.
        feature_names: modality name -> its feature names (fixes the modalities and dims).
        modality_attrs: modality name -> extra attributes (extractor, extractor_version, config).
        overwrite: replace an existing store made with other settings.

    Raises:
        StoreError: the file exists but is not a store, or was made with other settings.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: dict[str, Any],
        feature_names: dict[str, list[str]],
        modality_attrs: dict[str, dict[str, Any]] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self.hash = settings_hash(settings)
        self.modalities = list(feature_names)
        self._pending: list[Sample] = []
        self._pending_failures: list[tuple[str, str, str, str]] = []
        self.f: StoreFile | None = None
        lock = _lock(self.path)
        try:
            if journal_path(self.path).exists():
                recover(self.path)  # a writer died mid-commit: back to its last commit
            if self.path.exists() and self.path.stat().st_size > 0:
                existing = _open(self.path, "r")
                old_hash = existing.attrs.get("settings_hash", "")
                existing.close()
                if old_hash != self.hash:
                    if not overwrite:
                        raise StoreError(
                            f"{self.path} was made with other settings (hash {old_hash}, now "
                            f"{self.hash}); use another --out, the same settings, or --overwrite"
                        )
                    self.path.unlink()
            if not self.path.exists() or self.path.stat().st_size == 0:
                self._create(feature_names, modality_attrs or {})
        except BaseException:
            lock.release()
            raise
        self.f = open_writable(self.path, lock=lock)
        _add_text_fields(self.f)
        self._truncate_uncommitted()

    def _create(self, feature_names: dict[str, list[str]], attrs: dict[str, dict]) -> None:
        """Write an empty store beside the target and rename it into place when complete."""
        tmp = self.path.with_name(self.path.name + ".creating")
        tmp.unlink(missing_ok=True)
        jf = JournaledFile(tmp)
        try:
            with h5py.File(jf, "w") as f:
                self._layout(f, feature_names, attrs)
            jf.commit()
        except OSError as e:
            jf.close()
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, e, 0) from None
        jf.close()
        os.replace(tmp, self.path)

    def _layout(self, f: h5py.File, feature_names: dict[str, list[str]],
                attrs: dict[str, dict]) -> None:
        f.attrs.update(
            schema_version=SCHEMA_VERSION,
            msekit_version=__version__,
            settings=json.dumps(self.settings, sort_keys=True, default=str),
            settings_hash=self.hash,
            n_samples=0,
            modalities=json.dumps(self.modalities),
            created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        s = f.create_group("samples")
        for name in SAMPLE_STR_FIELDS + OPTIONAL_STR_FIELDS:
            s.create_dataset(name, (0,), STR, maxshape=(None,), chunks=(1024,))
        s.create_dataset("duration", (0,), "f8", maxshape=(None,), chunks=(1024,))
        for prefix in [*self.modalities, "token", "word"]:
            for kind in ("offset", "length"):
                s.create_dataset(f"{prefix}_{kind}", (0,), "i8", maxshape=(None,), chunks=(1024,))
        for m, names in feature_names.items():
            g = f.create_group(m)
            dim = len(names)
            g.create_dataset("data", (0, dim), "f4", maxshape=(None, dim),
                             chunks=(_ROW_CHUNK, max(dim, 1)), compression="gzip",
                             compression_opts=1, shuffle=True)
            g.create_dataset("times", (0, 2), "f8", maxshape=(None, 2), chunks=(_ROW_CHUNK, 2),
                             compression="gzip", compression_opts=1)
            g.create_dataset("mask", (0,), "u1", maxshape=(None,), chunks=(_ROW_CHUNK,))
            g.attrs["feature_names"] = json.dumps(list(names))
            for k, v in attrs.get(m, {}).items():
                g.attrs[k] = v if isinstance(v, str | int | float) else json.dumps(v, default=str)
        t = f.create_group("text")
        t.create_dataset("token_ids", (0,), "i4", maxshape=(None,), chunks=(16384,))
        t.create_dataset("words", (0,), STR, maxshape=(None,), chunks=(1024,))
        t.create_dataset("word_times", (0, 2), "f8", maxshape=(None, 2), chunks=(1024, 2))
        fl = f.create_group("failures")
        for name in FAILURE_FIELDS:
            fl.create_dataset(name, (0,), STR, maxshape=(None,), chunks=(256,))
        _add_text_fields(f)

    def _truncate_uncommitted(self) -> None:
        """Drop rows past n_samples (left by older msekit versions killed mid-commit)."""
        f = self.f
        n = int(f.attrs["n_samples"])
        s = f["samples"]
        if all(s[name].shape[0] == n for name in s):
            return
        for prefix in [*self.modalities, "token", "word"]:  # stray offsets of msekit 0.1
            off, _ = ragged_offsets(s, prefix, n)
            s[f"{prefix}_offset"].resize(n, axis=0)
            if n:
                s[f"{prefix}_offset"][:] = off
        for name in s:
            if s[name].shape[0] != n:
                s[name].resize(n, axis=0)

        def end(prefix: str) -> int:
            return int(s[f"{prefix}_offset"][n - 1] + s[f"{prefix}_length"][n - 1]) if n else 0

        for m in self.modalities:
            for name in ("data", "times", "mask"):
                f[m][name].resize(end(m), axis=0)
        f["text/token_ids"].resize(end("token"), axis=0)
        for name in ("words", "word_times", "word_prob"):
            f["text"][name].resize(end("word"), axis=0)
        self._commit_file()

    def existing_ids(self) -> set[str]:
        """Ids of the samples already committed."""
        n = int(self.f.attrs["n_samples"])
        return set(self.f["samples/id"].asstr()[:n].tolist())

    def committed(self) -> int:
        """The number of committed samples."""
        return self.f.committed if self.f is not None else 0

    def add(self, sample: Sample) -> None:
        """Queue a sample; it is written at the next ``commit``."""
        for m in self.modalities:
            mod = sample.modalities.get(m)
            want = self.f[m]["data"].shape[1]
            if mod is not None and mod.data.shape[1] != want and len(mod.data):
                raise StoreError(
                    f"sample {sample.id!r}: {m} has {mod.data.shape[1]} features, the store {want}"
                )
        self._pending.append(sample)

    def add_failure(self, sample_id: str, path: str, stage: str, reason: str) -> None:
        """Queue a failure record (written at the next ``commit``)."""
        self._pending_failures.append((sample_id, str(path), stage, reason))

    def commit(self) -> None:
        """Write queued samples and failures and commit them, or nothing at all.

        Raises:
            DiskFullError: too little free space (checked first) or a write failed; the store
                is left at its last commit and this writer is closed.
        """
        if self.f is None or (not self._pending and not self._pending_failures):
            return
        f, samples = self.f, self._pending
        try:
            check_free(self.path, _estimate(samples, self._pending_failures), f.committed)
            self._write_rows(samples)
        except BaseException:
            self.f.abort()
            self.f = None
            raise
        self._commit_file()
        self._pending, self._pending_failures = [], []

    def _commit_file(self) -> None:
        try:
            self.f.commit()
        except StoreError:
            self.f = None  # rolled back and closed by StoreFile.commit
            raise

    def _write_rows(self, samples: list[Sample]) -> None:
        f, s = self.f, self.f["samples"]
        n = int(f.attrs["n_samples"])
        if s["id"].shape[0] != n:
            raise StoreError(f"{self.path}: rows past n_samples in an open writer; rerun")
        for name in SAMPLE_STR_FIELDS + OPTIONAL_STR_FIELDS:
            if name in s:
                _append(s[name], [getattr(x, name) for x in samples])
        _append(s["duration"], np.array([x.duration for x in samples], np.float64))
        for name in TEXT_STR_FIELDS:
            _append(s[name], [getattr(x, name) for x in samples])
        for name in TEXT_F8_FIELDS:
            _append(s[name], np.array([getattr(x, name) for x in samples], np.float64))
        for m in self.modalities:
            dim = f[m]["data"].shape[1]
            mods = [x.modalities.get(m) or Modality.empty(dim) for x in samples]
            self._append_ragged(m, [(f[m]["data"], [x.data for x in mods]),
                                    (f[m]["times"], [x.times for x in mods]),
                                    (f[m]["mask"], [x.mask.astype(np.uint8) for x in mods])])
        self._append_ragged("token", [(f["text/token_ids"],
                                       [np.asarray(x.token_ids, np.int32) for x in samples])])
        self._append_ragged("word", [(f["text/words"], [np.array(x.words, object) for x in samples]),
                                     (f["text/word_times"],
                                      [np.asarray(x.word_times, np.float64).reshape(-1, 2)
                                       for x in samples]),
                                     (f["text/word_prob"], [x.probs() for x in samples])])
        fails = self._pending_failures
        for i, name in enumerate(FAILURE_FIELDS):
            _append(f["failures"][name], [r[i] for r in fails])
        f.attrs["n_samples"] = n + len(samples)

    def _append_ragged(self, prefix: str, targets: list[tuple[h5py.Dataset, list]]) -> None:
        s = self.f["samples"]
        lengths = np.array([len(a) for a in targets[0][1]], np.int64)
        start = targets[0][0].shape[0]
        # (N,) exclusive cumsum: nothing for a commit of failures only (older versions wrote a
        # stray 0 there, which shifted the offsets of every later sample; see ragged_offsets)
        _append(s[f"{prefix}_offset"], start + np.cumsum(lengths) - lengths)
        _append(s[f"{prefix}_length"], lengths)
        for ds, arrays in targets:
            if lengths.sum():
                _append(ds, np.concatenate([a for a in arrays if len(a)]))

    def close(self) -> None:
        if getattr(self, "f", None) is not None and self.f.id.valid:
            self.commit()
            if self.f is not None:
                self.f.close()
                self.f = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _add_text_fields(f: h5py.File) -> None:
    """Create the transcript-metadata datasets missing from a store (older stores lack them)."""
    s, n = f["samples"], f["samples/id"].shape[0]
    for name in (*TEXT_STR_FIELDS, *TEXT_F8_FIELDS):
        if name not in s:
            ds = s.create_dataset(name, (n,), STR if name in TEXT_STR_FIELDS else "f8",
                                  maxshape=(None,), chunks=(1024,))
            if n and name in TEXT_F8_FIELDS:
                ds[:] = np.nan
    if "word_prob" not in f["text"]:
        w = f["text/words"].shape[0]
        f["text"].create_dataset("word_prob", (w,), "f4", maxshape=(None,), chunks=(1024,),
                                 fillvalue=np.nan)


def merge_stores(paths: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False,
                 batch: int = 64) -> int:
    """Join stores made with the same settings; see ``msekit.merge.merge_stores``."""
    from msekit.merge import merge_stores as merge

    return merge(paths, out, overwrite, batch)
