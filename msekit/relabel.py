"""Labels are not features: set or change labels, texts, splits and groups of a store in place.

``relabel(store, labels)`` (``msekit label STORE labels.csv``) reads a labels table (the layouts
of ``msekit.inputs.load_labels``) and rewrites the columns it defines: label always, split /
group / text when the table has those columns. ``apply_changes`` is the shared core: an
extraction rerun with a changed labels or transcripts file calls it for the samples it skips,
so a corrected table is never silently ignored.

Every column is written beside the old one and renamed in one commit (``msekit.store``'s
journal), so a failure or a full disk leaves the old labels. A changed text gets new token ids
from the store's tokenizer (its ``extract.llm`` setting); its word timings are kept. Changed
splits refresh the normalization statistics of the store's views.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError
from msekit.store import check_free, open_store_file, ragged_offsets, replace_group, write_column

FIELDS = ("label", "split", "group", "text")


def _retokenize(f, texts: dict[int, str], tokenizer: Any) -> None:
    """Rewrite /text/token_ids with new ids for the samples in ``texts`` (index -> text)."""
    n = int(f.attrs["n_samples"])
    s = f["samples"]
    off, ln = ragged_offsets(s, "token", n)
    old = f["text/token_ids"][:]
    parts = []
    for i in range(n):
        if i in texts:
            ids = tokenizer.encode(texts[i]) if tokenizer is not None and texts[i] else []
            parts.append(np.asarray(ids, np.int32))  # (K_i,)
        else:
            parts.append(old[int(off[i]):int(off[i] + ln[i])])
    lengths = np.array([len(p) for p in parts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n else lengths
    tmp = "/.tmp_token_ids"
    if tmp in f:
        del f[tmp]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    ds = f.create_dataset(tmp, (len(flat),), "i4", maxshape=(None,), chunks=(16384,))
    if len(flat):
        ds[:] = flat
    replace_group(f, tmp, "text/token_ids")
    write_column(f, "token_offset", offsets, "i8")
    write_column(f, "token_length", lengths, "i8")


def _text_encoder(f) -> Any:
    name = json.loads(f.attrs["settings"]).get("extract", {}).get("llm")
    if not name or str(name).lower() == "none":
        return None
    from msekit.llm import load_text_encoder

    return load_text_encoder(name)


def apply_changes(path: str | os.PathLike, wanted: dict[str, dict[str, str]],
                  tokenizer: Any = None) -> dict[str, int]:
    """Set fields of committed samples to the values in ``wanted`` (id -> {field: value}).

    Args:
        path: the store.
        wanted: per sample id, the fields (of ``FIELDS``) and the values they should have;
            ids the store does not hold are ignored.
        tokenizer: encodes changed texts (None: the store's own, loaded when a text changes).

    Returns:
        {field: samples whose value changed} for the fields that changed.

    Raises:
        MsekitError: an unknown field; DiskFullError (store unchanged) when the disk is full.
    """
    bad = sorted({k for v in wanted.values() for k in v} - set(FIELDS))
    if bad:
        raise MsekitError(f"cannot relabel fields {bad}; only {list(FIELDS)}")
    with open_store_file(path, "r") as f:
        n = int(f.attrs["n_samples"])
        s = f["samples"]
        ids = s["id"].asstr()[:n].tolist()
        cols = {k: s[k].asstr()[:n].tolist() for k in FIELDS}
    changed: dict[str, set[int]] = {k: set() for k in FIELDS}
    for i, sid in enumerate(ids):
        for k, v in wanted.get(sid, {}).items():
            if cols[k][i] != v:
                cols[k][i] = v
                changed[k].add(i)
    counts = {k: len(v) for k, v in changed.items() if v}
    if not counts:
        return {}
    check_free(path, 64 * n + sum(len(t) for t in cols["text"]) * 2, n)
    with open_store_file(path, "a") as f:
        for k in counts:
            write_column(f, k, cols[k])
        if changed["text"]:
            enc = tokenizer if tokenizer is not None else _text_encoder(f)
            _retokenize(f, {i: cols["text"][i] for i in changed["text"]}, enc)
        views = [v for v in f.get("views", {}) if not v.startswith(".")]
    if changed["split"] and "train" in cols["split"]:
        from msekit.views import write_norm

        for v in views:
            write_norm(path, v)
    return counts


def relabel(store: str | os.PathLike, labels: str | os.PathLike) -> dict[str, Any]:
    """Set labels (and splits, groups, texts when the table has them) of a store from a table.

    Returns:
        A summary: changed counts per field, samples matched, ids of the table not in the
        store, samples of the store not in the table (unchanged), warnings.

    Raises:
        MsekitError: an unreadable table, a duplicate id, a bad split value (all named).
    """
    from msekit.inputs import load_labels
    from msekit.store import StoreReader

    warnings: list[str] = []
    rows, _ = load_labels(labels, warnings)
    with StoreReader(store) as r:
        ids = set(r.ids)
    wanted = {sid: {k: (row.text if k == "text" else getattr(row, k)) or ""
                    for k in FIELDS if k in row.given}
              for sid, row in rows.items() if sid in ids}
    counts = apply_changes(store, wanted)
    unknown = sorted(set(rows) - ids)
    if unknown:
        show = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.append(f"{len(unknown)} id(s) of {Path(labels).name} are not in the store: {show}")
    return {"store": str(store), "labels": str(labels), "changed": counts,
            "matched": len(wanted), "not_in_store": len(unknown),
            "not_in_table": len(ids) - len(wanted), "warnings": warnings}
