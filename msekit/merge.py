"""``msekit merge``: join the stores of one extraction setup (e.g. its shards) into one."""

from __future__ import annotations

import os
from pathlib import Path

from msekit.formats import write_samples
from msekit.store import FAILURE_FIELDS, StoreError, StoreReader, _attr_value, check_free


def merge_stores(
    paths: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False,
    batch: int = 64,
) -> int:
    """Join stores made with the same settings (e.g. the shards of one extraction) into one.

    Samples are written sorted by id, the order a single extraction run commits in, so merged
    shards equal a single-run store. The merged store is written beside ``out`` and renamed
    when complete: a full disk stops the merge with one line and leaves no partial store. Failures of items that have no sample in any input are
    kept (the latest per id).

    Args:
        paths: the stores to join (at least one).
        out: the merged store; must not be one of ``paths``.
        overwrite: replace ``out`` when it exists.
        batch: samples per commit (bounds memory).

    Returns:
        The number of samples written.

    Raises:
        StoreError: no inputs, an input is not a store, settings or feature names differ, an id
            occurs in two stores, or ``out`` exists (without ``overwrite``).
        DiskFullError: not enough free space (about the inputs' size) or a write failed.
    """
    if not paths:
        raise StoreError("merge needs at least one store")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise StoreError(f"merge output {out} is also an input; write to another file")
    if out.exists() and not overwrite:
        raise StoreError(f"{out} exists; choose another --out or pass --overwrite")
    readers = [StoreReader(p) for p in paths]
    try:
        first = readers[0]
        names = {m: first.feature_names(m) for m in first.modalities}
        owner: dict[str, tuple[int, int]] = {}
        for k, r in enumerate(readers):
            if r.settings_hash != first.settings_hash:
                raise StoreError(f"{r.path} was made with other settings than {first.path} (hash "
                                 f"{r.settings_hash} vs {first.settings_hash}); only stores of "
                                 "one extraction setup can be merged")
            if {m: r.feature_names(m) for m in r.modalities} != names:
                raise StoreError(f"{r.path} has other modalities / feature names than {first.path}")
            for i, sid in enumerate(r.ids):
                if sid in owner:
                    raise StoreError(f"sample id {sid!r} is in both {readers[owner[sid][0]].path} "
                                     f"and {r.path}; merge stores with disjoint ids (shards)")
                owner[sid] = (k, i)
        attrs = {m: {k: _attr_value(v) for k, v in first.modality_attrs(m).items()
                     if k != "feature_names"} for m in first.modalities}
        failed: dict[str, dict[str, str]] = {}
        for r in readers:
            for rec in r.failures():
                if rec["id"] not in owner:
                    failed[rec["id"]] = rec
        samples = (readers[owner[sid][0]].sample(owner[sid][1]) for sid in sorted(owner))
        records = [tuple(failed[sid][k] for k in FAILURE_FIELDS) for sid in sorted(failed)]
        check_free(out, sum(r.path.stat().st_size for r in readers), 0)
        return write_samples(out, first.settings, names, samples, overwrite, batch,
                             modality_attrs=attrs, failures=records)
    finally:
        for r in readers:
            r.close()
