"""Grouped, seeded train/valid/test splits: ``make_splits`` and ``split_store``.

Clips of one source video must never land in two splits. The group of a sample is, in order:
the store's ``group`` column (a labels CSV's ``group`` column, a dataset format's speaker or
video id), else its ``source`` (the media file it was extracted from), else the sample itself.
Ids are never cut apart to guess a video: when nothing says which clips share one, each clip is
its own group.

Examples:
    Clips a-b share group v1, c-d group v2, e-f the source file x.mp4; g and h are alone:

    >>> make_splits(list("abcdefgh"), ["v1", "v1", "v2", "v2", "", "", "", ""], (0.5, 0.25, 0.25),
    ...             seed=0, sources=["", "", "", "", "x.mp4", "x.mp4", "y.mp4", ""])
    ['valid', 'valid', 'test', 'test', 'train', 'train', 'train', 'train']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError
from msekit.labels import SPLIT_NAMES


def group_of(sample_id: str) -> str:
    """The video of an id written in a dataset format's documented ``video<sep>clip`` form:
    MMSA's ``video$_$clip`` and the CMU SDK's ``video[3]``; any other id is its own group."""
    for sep in ("$_$", "["):
        if sep in sample_id:
            return sample_id.split(sep, 1)[0]
    return sample_id


def group_keys(ids: Sequence[str], groups: Sequence[str] | None = None,
               sources: Sequence[str] | None = None) -> list[str]:
    """One group key per sample: its group, else its source file, else its id."""
    n = len(ids)
    groups, sources = groups or [""] * n, sources or [""] * n
    return [f"group:{g}" if g else f"source:{s}" if s else f"id:{i}"
            for i, g, s in zip(ids, groups, sources, strict=True)]


def parse_ratios(ratios: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' or a sequence of three non-negative numbers summing to > 0, normalized."""
    try:
        vals = [float(x) for x in (ratios.split(",") if isinstance(ratios, str) else ratios)]
    except ValueError:
        raise MsekitError(f"--ratios must be three numbers like 0.8,0.1,0.1; got {ratios!r}") from None
    if len(vals) != 3 or min(vals) < 0 or sum(vals) <= 0:
        raise MsekitError(f"--ratios must be three non-negative numbers (train,valid,test); got {ratios!r}")
    total = sum(vals)
    return vals[0] / total, vals[1] / total, vals[2] / total


def make_splits(ids: Sequence[str], groups: Sequence[str] | None = None,
                ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                sources: Sequence[str] | None = None) -> list[str]:
    """Assign train/valid/test by group, so that no group lands in two splits.

    Groups are shuffled with the seed, then each goes to the split furthest below its target
    share of samples. The result depends only on the ids, groups, sources, ratios and seed.

    Args:
        ids: sample ids.
        groups: group of each sample ('' = none, see :func:`group_keys`).
        ratios: shares of train, valid, test.
        seed: the shuffle seed.
        sources: source media file of each sample ('' = none).

    Returns:
        One split name per sample.
    """
    r = parse_ratios(ratios)
    keys = group_keys(ids, groups, sources)
    uniq = sorted(set(keys))
    size: dict[str, int] = {}
    for k in keys:
        size[k] = size.get(k, 0) + 1
    order = np.random.default_rng(seed).permutation(len(uniq))
    target = [x * len(ids) for x in r]
    count = [0, 0, 0]
    assigned: dict[str, str] = {}
    open_ = [k for k in range(3) if r[k] > 0]
    for j in order:
        key = uniq[j]
        best = max(open_, key=lambda k: (target[k] - count[k], -k))
        assigned[key] = SPLIT_NAMES[best]
        count[best] += size[key]
    return [assigned[k] for k in keys]


def empty_splits(splits: Sequence[str], ratios: Sequence[float]) -> list[str]:
    """Split names that were asked for (ratio > 0) and came out empty."""
    r = parse_ratios(ratios)
    have = set(splits)
    return [name for name, x in zip(SPLIT_NAMES, r, strict=True) if x > 0 and name not in have]


def read_split_columns(path: str | Path) -> dict[str, list[str]]:
    """id, group, source and split columns of a store."""
    from msekit.store import open_store_file

    with open_store_file(path, "r") as f:
        n = int(f.attrs["n_samples"])
        s = f["samples"]
        return {k: s[k].asstr()[:n].tolist() for k in ("id", "group", "source", "split")}


def split_store(path: str | Path, seed: int = 0, ratios: str | Sequence[float] = (0.8, 0.1, 0.1),
                overwrite: bool = False) -> dict[str, Any]:
    """Write grouped, seeded splits into the store's split column and refresh normalization.

    Args:
        path: the store.
        seed: shuffle seed.
        ratios: train, valid, test shares.
        overwrite: replace splits that came with the labels.

    Returns:
        Samples per split, and the number of groups.

    Raises:
        MsekitError: the store already has splits and ``overwrite`` is False, or a split that was
            asked for would come out empty (nothing is written then).
    """
    from msekit.store import VIEWS_GROUP, open_store_file, replace_sample_column
    from msekit.views import ALIGN_MODES, write_norm

    r = parse_ratios(ratios)
    cols = read_split_columns(path)
    if any(cols["split"]) and not overwrite:
        raise MsekitError(f"{path} already has splits (from its labels); pass --overwrite to replace them")
    splits = make_splits(cols["id"], cols["group"], r, seed, cols["source"])
    n_groups = len(set(group_keys(cols["id"], cols["group"], cols["source"])))
    empty = empty_splits(splits, r)
    if empty:
        raise MsekitError(f"{path}: split(s) {empty} would be empty ({len(splits)} samples in {n_groups} "
                          "group(s)); nothing written: change --ratios or add samples/groups")
    replace_sample_column(path, "split", splits,
                          {"made_by": "msekit split", "seed": seed, "ratios": list(r),
                           "grouped_by": "group column, else source file, else sample"})
    with open_store_file(path, "r") as f:
        views = [v for v in ALIGN_MODES if f"{VIEWS_GROUP}/{v}" in f]
        has_mods = bool(json.loads(f.attrs["modalities"]))
    if has_mods and "train" in splits:
        for v in set(views) | {"none"}:
            write_norm(path, v)
    return {k: splits.count(k) for k in SPLIT_NAMES} | {"groups": n_groups}
