"""The community formats: import into a feature store, export out of one.

| format | files | module |
|---|---|---|
| ``mmsa`` | MMSA pickles (``aligned_50.pkl``, ``unaligned_50.pkl``, ``unaligned_39.pkl``) | ``mmsa`` |
| ``items`` | the MSE-Adapter authors' per-split item lists (MELD, CHERMA) | ``items`` |
| ``csd`` | CMU-MultimodalSDK computational sequences (.csd) | ``csd`` |
| ``csv`` | text-only labels CSV (id,text,label,split or the MELD layout) | ``csvtext`` |

docs/formats.md describes each layout and how it maps to the store.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from msekit.errors import MsekitError
from msekit.labels import SPLIT_ALIASES
from msekit.store import DiskFullError, Sample, StoreWriter

FORMATS = ("auto", "mmsa", "items", "csd", "csv")


def generic_names(dim: int) -> list[str]:
    """f0, f1, ...: feature names when the source does not give them."""
    return [f"f{k}" for k in range(dim)]


def split_from_name(path: Path) -> str | None:
    """'train' / 'valid' / 'test' from a file name like train.pkl, dev_sent_emo.csv, meld_val.pkl."""
    tokens = path.stem.lower().replace("-", "_").split("_")
    for tok in tokens:
        if tok in SPLIT_ALIASES:
            return SPLIT_ALIASES[tok]
    return None


def write_samples(out: str | Path, settings: dict[str, Any], feature_names: dict[str, list[str]],
                  samples: Iterable[Sample], overwrite: bool = False, batch: int = 256,
                  finish: Callable[[Path], None] | None = None,
                  modality_attrs: dict[str, dict[str, Any]] | None = None,
                  failures: Iterable[tuple[str, str, str, str]] = ()) -> int:
    """Write samples to a new store (a finished store is never appended to by an import).

    The store is written to ``<out>.importing`` beside the target and renamed onto ``out`` only
    when complete, so a malformed input or a full disk leaves no partial store (and an older
    ``out`` intact).

    Args:
        out: the store to create.
        settings: the store's settings (how it was imported).
        feature_names: modality -> feature names.
        samples: the samples, in store order.
        overwrite: replace an existing ``out``.
        batch: samples per commit.
        finish: called with the temporary store's path after the last commit (extra columns).
        modality_attrs: modality -> attributes (extractor, version, config).
        failures: (id, path, stage, reason) records to keep.

    Raises:
        MsekitError: the store exists and ``overwrite`` is False, two samples share an id, or
            the temporary store cannot be written (disk full: one line).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise MsekitError(f"{out} exists; choose another --out or pass --overwrite")
    tmp = out.with_name(out.name + ".importing")
    _remove_store(tmp)
    seen: set[str] = set()
    n = 0
    try:
        with StoreWriter(tmp, settings, feature_names, modality_attrs) as w:
            for s in samples:
                if s.id in seen:
                    raise MsekitError(f"sample id {s.id!r} occurs twice; ids must be unique in a store")
                seen.add(s.id)
                w.add(s)
                n += 1
                if n % batch == 0:
                    w.commit()
            for rec in failures:
                w.add_failure(*rec)
        if finish is not None:
            finish(tmp)
        os.replace(tmp, out)
    except DiskFullError:
        raise DiskFullError(f"disk full writing {out}: stopped and wrote nothing "
                            f"({'the old store is unchanged' if out.exists() else 'no store'}); "
                            "free space and rerun") from None
    except OSError as e:
        raise MsekitError(f"cannot write {out} ({e.strerror or e}); choose another --out") from None
    finally:
        _remove_store(tmp)
    return n


def _remove_store(path: Path, keep_store: bool = False) -> None:
    """Remove a store and its side files (only the side files with ``keep_store``)."""
    for suffix in ("", ".lock", ".journal", ".creating"):
        if suffix or not keep_store:
            _unlink(path.with_name(path.name + suffix))


def atomic_write(out: str | Path, write: Callable[[Any], None]) -> None:
    """Write a file through ``write(fh)`` to a temp file beside ``out``, renamed on success.

    Raises:
        MsekitError: ``out`` cannot be written (a read-only folder, a full disk), in one line.
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as e:
        _unlink(tmp)
        what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise MsekitError(f"cannot write {out} ({what}); nothing was written, choose another "
                          "--out or free space") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only folder: nothing was created there anyway
        pass


def import_any(inputs: list[Path], out: Path, fmt: str = "auto", trust_pickle: bool = False,
               overwrite: bool = False) -> dict[str, Any]:
    """Import foreign files into a new store, picking the format from the files when 'auto'.

    Args:
        inputs: the files (one MMSA pickle; item-list pickles, one per split; .csd files, each
            optionally prefixed 'audio=', 'video=', 'words=', 'labels='; CSV files).
        out: the store to create.
        fmt: one of FORMATS.
        trust_pickle: load pickles without the restricted unpickler.
        overwrite: replace an existing ``out``.

    Returns:
        A summary with the format, samples written and what was cleaned.
    """
    from msekit.formats import csd, csvtext, items, mmsa
    from msekit.formats.safe_pickle import load_pickle

    if fmt not in FORMATS:
        raise MsekitError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if not inputs:
        raise MsekitError("give at least one file to import")
    plain = [Path(str(p).split("=", 1)[-1]) for p in inputs]
    for p in plain:
        if not p.exists():
            raise MsekitError(f"{p}: no such file")
    if fmt == "auto":
        suffixes = {p.suffix.lower() for p in plain}
        if suffixes <= {".csd"}:
            fmt = "csd"
        elif suffixes <= {".csv", ".tsv"}:
            fmt = "csv"
        elif suffixes <= {".pkl", ".pickle", ".pk"}:
            first = load_pickle(plain[0], trust_pickle)
            fmt = "items" if isinstance(first, list) else "mmsa"
            if fmt == "mmsa":
                if len(plain) != 1:
                    raise MsekitError("an MMSA pickle holds every split; import one file at a time")
                return mmsa.import_mmsa(plain[0], out, trust_pickle, overwrite, loaded=first)
        else:
            raise MsekitError(f"cannot tell the format of {', '.join(map(str, plain))}; pass --format")
    if fmt == "mmsa":
        if len(plain) != 1:
            raise MsekitError("an MMSA pickle holds every split; import one file at a time")
        return mmsa.import_mmsa(plain[0], out, trust_pickle, overwrite)
    if fmt == "items":
        return items.import_items(plain, out, trust_pickle, overwrite)
    if fmt == "csd":
        return csd.import_csd([str(p) for p in inputs], out, overwrite)
    return csvtext.import_csv(plain, out, overwrite)
