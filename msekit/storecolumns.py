"""In-place rewrites of a store: columns of /samples and whole groups, crash-safely.

Used by the training views (``msekit.views``, ``msekit.dataset``), ``msekit label``
(``msekit.relabel``) and the splits. Import these from ``msekit.store``.

Views live beside the raw sequences:  /views/<mode>/  (attrs: mode, settings JSON, n_samples,
settings_hash), /views/<mode>/samples/<m>_{offset,length}, /views/<m>/{data,times,mask} with the
same conventions as the raw modalities but uncompressed and contiguous, so that a reader can
fetch a sample with one os.pread at a computed byte offset. Normalization statistics live in
/norm/<mode>/<m>/{mean,std}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from msekit.errors import StoreError
from msekit.storefile import _open
from msekit.storeschema import STR

VIEWS_GROUP = "views"
NORM_GROUP = "norm"


def open_store_file(path: str | os.PathLike, mode: str = "r",
                    cache_bytes: int = 64 * 1024 * 1024) -> h5py.File:
    """Open a store's HDF5 file directly, with a chunk cache big enough for whole-chunk reads.

    The raw frame arrays are gzip chunks of 4096 rows (about 1.2 MB for 74-d audio), larger than
    h5py's default 1 MB cache, so sequential readers need a bigger cache to decompress each
    chunk once.

    Raises:
        StoreError: missing file, not HDF5, not a store, or a newer schema.
    """
    return _open(Path(path), mode, rdcc_nbytes=cache_bytes, rdcc_nslots=10007)


def replace_group(f: h5py.File, tmp_name: str, final_name: str) -> None:
    """Move a fully written group or dataset ``tmp_name`` to ``final_name``, replacing it.

    The old object is first renamed aside, so that at every moment either the old or the new
    one is reachable under a known name; only link operations happen here.
    """
    old = f"{final_name}.old"
    if old in f:
        del f[old]
    if final_name in f:
        f.move(final_name, old)
    parent = final_name.rsplit("/", 1)[0] if "/" in final_name else None
    if parent and parent not in f:
        f.require_group(parent)
    f.move(tmp_name, final_name)
    if old in f:
        del f[old]
    f.flush()


def write_column(f: h5py.File, name: str, values: list[Any], dtype: Any = STR,
                 attrs: dict[str, Any] | None = None) -> None:
    """Write /samples/<name> anew in an open store: a temp dataset renamed over the old one.

    Args:
        f: the store, open for writing.
        name: a column of /samples (created when missing).
        values: one value per committed sample.
        dtype: the column's dtype (utf-8 strings by default).
        attrs: attributes of the new column (JSON-encoded when not scalar); None keeps the old
            column's attributes.
    """
    tmp = f"/.tmp_column_{name}"
    if tmp in f:
        del f[tmp]
    ds = f.create_dataset(tmp, (len(values),), dtype, maxshape=(None,), chunks=(1024,))
    if len(values):
        ds[:] = values
    if attrs is None:
        old = f.get(f"samples/{name}")
        attrs = dict(old.attrs) if old is not None else {}
    for k, v in attrs.items():
        ds.attrs[k] = v if isinstance(v, str | int | float | np.generic) else json.dumps(v, default=str)
    replace_group(f, tmp, f"samples/{name}")


def replace_sample_column(path: str | os.PathLike, name: str, values: list[str],
                          attrs: dict[str, Any] | None = None) -> None:
    """Rewrite a string column of /samples (e.g. 'split') crash-safely, keeping it appendable.

    Args:
        path: the store.
        name: a column of /samples; a new column is created when missing.
        values: one string per committed sample.
        attrs: attributes recorded on the column (JSON-encoded when not scalar).

    Raises:
        StoreError: the number of values differs from the committed samples.
    """
    with open_store_file(path, "a") as f:
        n = int(f.attrs["n_samples"])
        if len(values) != n:
            raise StoreError(f"{path}: {len(values)} values for column {name!r}, store has {n}")
        write_column(f, name, values, STR, attrs or {})


def _attr_value(v: Any) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars -> int/float/str)."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v
