"""Labels and splits in one place: task inference, class order, split names and their aliases.

Every module that reads a split name or decides a task goes through this table, so that
``dev`` or ``validation`` mean the same thing everywhere.

Examples:
    >>> canonical_split("Dev"), canonical_split("validation"), canonical_split("")
    ('valid', 'valid', '')
    >>> infer_task(["1.5", "-0.3"]), infer_task(["joy", "anger"]), sorted_label_names(["10", "2"])
    ('regression', 'classification', ['2', '10'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from msekit.errors import MsekitError

TASKS = ("regression", "classification")
SPLIT_NAMES = ("train", "valid", "test")
# The one table of split aliases (lower case) -> split name.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}


def canonical_split(name: str | None) -> str:
    """The split name of an alias ('' stays '': no split).

    Raises:
        MsekitError: an unknown name.
    """
    key = (name or "").strip().lower()
    if not key:
        return ""
    if key not in SPLIT_ALIASES:
        raise MsekitError(f"split must be one of {sorted(SPLIT_ALIASES)} (or empty), received {name!r}")
    return SPLIT_ALIASES[key]


def infer_task(labels: Sequence[str]) -> str:
    """'regression' when every label parses as a float and there are > 10 distinct values or a
    non-integer one; else 'classification'. No labels at all: 'regression'."""
    vals = [x for x in labels if x != ""]
    try:
        nums = [float(x) for x in vals]
    except ValueError:
        return "classification"
    if not nums:
        return "regression"
    if len(set(nums)) > 10 or any(not math.isfinite(x) or not x.is_integer() for x in nums):
        return "regression"
    return "classification"


def sorted_label_names(labels: Sequence[str]) -> list[str]:
    """Distinct non-empty labels, numerically sorted when all are integers, else by text."""
    names = sorted({x for x in labels if x != ""})
    try:
        return sorted(names, key=lambda x: (float(x), x))
    except ValueError:
        return names


def check_label_request(task: str | None, label_names: Sequence[str] | None, where: str) -> None:
    """Refuses, before any training, a request that cannot make a classifier.

    Args:
        task: the requested task (None: from the store).
        label_names: the requested classes (None: all of the store's).
        where: the store, named in the message.

    Raises:
        MsekitError: classes with ``task='regression'``, or fewer than two distinct classes.
    """
    if label_names is None:
        return
    if task == "regression":
        raise MsekitError(f"--labels {','.join(label_names)} names classes but --task is regression; "
                          "drop --labels or use --task classification")
    if len(set(label_names)) < 2:
        raise MsekitError(f"--labels {','.join(label_names)}: a classifier needs at least two distinct "
                          f"classes of {where}")


def check_classes(label_names: Sequence[str] | None, present: Sequence[str], where: str) -> None:
    """Refuses a classification split whose labels hold fewer than two classes.

    Raises:
        MsekitError: fewer than two distinct classes among ``present``.
    """
    have = sorted(set(present) - {""})
    if label_names is not None and len(have) < 2:
        raise MsekitError(f"{where}: the train split holds {len(have)} class(es) {have}; a classifier "
                          "needs at least two (check the labels or --labels)")
