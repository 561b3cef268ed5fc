"""Evaluation metrics in the MMSA conventions that MSA/ERC papers compare with.

Three conventions, named in every result because their numbers are not comparable:

- ``mosei`` (MOSI/MOSEI, values in [-3, 3]): MAE and Pearson Corr on the raw values; Acc-7 and
  Acc-5 clip to [-3, 3] / [-2, 2] and round to the nearest integer (``np.round``: halves go to
  the even integer, as MMSA does); Acc-2 "has0" compares ``pred >= 0`` with ``true >= 0`` over
  all samples; Acc-2 "non0" drops ``true == 0`` and compares ``pred > 0`` with ``true > 0``;
  each Acc-2 has its sklearn weighted F1.
- ``sims`` (SIMS / SIMS-V2, values in [-1, 1]): both sides clipped to [-1, 1] first (MAE and
  Corr too); Acc-2 bins [-1, 0] / (0, 1] (zero is negative); Acc-3 edges -0.1, 0.1; Acc-5 edges
  -0.7, -0.1, 0.1, 0.7 (every bin closed on the right); weighted F1 of the two-class split.
- ``classification`` (MELD, CHERMA, ...): accuracy, weighted F1, a per-class table and the
  confusion matrix.

Examples:
    >>> m = regression_metrics([0.4, -1.2, 2.0], [0.0, -1.0, 2.6], convention="mosei")
    >>> round(m["mae"], 3), m["acc2_has0"], m["acc2_non0"]
    (0.4, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from msekit.errors import MsekitError

CONVENTIONS = ("mosei", "sims", "classification")
# Bin edges of the SIMS convention (MMSA): bins are (e[i], e[i+1]], the outer edges are +-1.01.
_SIMS_EDGES = {
    2: [-1.01, 0.0, 1.01],
    3: [-1.01, -0.1, 0.1, 1.01],
    5: [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
}

# Display names and whether larger is better, for tables and early stopping.
METRIC_INFO: dict[str, tuple[str, bool]] = {
    "acc2_has0": ("Acc-2 (has0: neg vs non-neg)", True),
    "f1_has0": ("F1 (has0)", True),
    "acc2_non0": ("Acc-2 (non0: neg vs pos)", True),
    "f1_non0": ("F1 (non0)", True),
    "acc2": ("Acc-2", True),
    "acc3": ("Acc-3", True),
    "acc5": ("Acc-5", True),
    "acc7": ("Acc-7", True),
    "f1": ("F1 (weighted, 2 classes)", True),
    "mae": ("MAE", False),
    "corr": ("Corr (Pearson)", True),
    "accuracy": ("Accuracy", True),
    "weighted_f1": ("Weighted F1", True),
    "n": ("samples", True),
}
# Metrics that are fractions, shown as percentages.
PERCENT_METRICS = frozenset(k for k in METRIC_INFO if k.startswith(("acc", "f1")) or k == "weighted_f1")


def choose_convention(y_true: Sequence[float] | np.ndarray, task: str = "regression") -> str:
    """Picks the metric convention from the task and the label range.

    Args:
        y_true: True values (regression) or class indices.
        task: ``regression`` or ``classification``.

    Returns:
        ``classification`` for classes; for regression ``sims`` when every |y| <= 1, else
        ``mosei``.
    """
    if task == "classification":
        return "classification"
    y = np.asarray(y_true, dtype=np.float64)
    return "sims" if y.size and np.all(np.abs(y) <= 1.0) else "mosei"


def _check_pair(y_pred: Any, y_true: Any, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as flat ``dtype`` arrays of one length, non-empty and finite."""
    pred = np.asarray(y_pred, dtype=dtype).reshape(-1)
    true = np.asarray(y_true, dtype=dtype).reshape(-1)
    if pred.shape != true.shape:
        raise MsekitError(f"predictions ({pred.size}) and labels ({true.size}) differ in length")
    if pred.size == 0:
        raise MsekitError("no samples to evaluate (empty split?)")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(true))):
        raise MsekitError("predictions and labels must be finite (drop unparsed answers first)")
    return pred, true


def _pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (undefined, not 0)."""
    if pred.size < 2 or np.std(pred) == 0 or np.std(true) == 0:
        return math.nan
    return float(np.corrcoef(pred, true)[0, 1])


def _acc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b)) if a.size else math.nan


def _wf1(true: np.ndarray, pred: np.ndarray) -> float:
    if true.size == 0:
        return math.nan
    return float(f1_score(true, pred, average="weighted", zero_division=0))


def _sims_bins(x: np.ndarray, k: int) -> np.ndarray:
    # searchsorted(side="left") on the inner edges puts a value equal to an edge in the lower
    # bin: bins closed on the right, as MMSA's (e[i] < x <= e[i+1]).
    return np.searchsorted(np.asarray(_SIMS_EDGES[k][1:-1]), x, side="left")


def regression_metrics(
    y_pred: Sequence[float] | np.ndarray,
    y_true: Sequence[float] | np.ndarray,
    convention: str | None = None,
) -> dict[str, Any]:
    """MMSA regression metrics.

    Args:
        y_pred: (N,) predicted values (finite; drop or count unparsed answers before).
        y_true: (N,) true values.
        convention: ``mosei`` or ``sims``; None picks it with :func:`choose_convention`.

    Returns:
        A dict with ``convention``, ``n`` and the convention's metrics (fractions in [0, 1],
        ``corr`` NaN when a side is constant). mosei: ``acc2_has0 f1_has0 acc2_non0 f1_non0
        acc5 acc7 mae corr``; sims: ``acc2 acc3 acc5 f1 mae corr``.

    Raises:
        MsekitError: Unequal lengths, no samples, non-finite values or an unknown convention.
    """
    pred, true = _check_pair(y_pred, y_true)
    convention = convention or choose_convention(true)
    out: dict[str, Any] = {"convention": convention, "n": int(pred.size)}
    if convention == "mosei":
        out["mae"] = float(np.mean(np.abs(pred - true)))
        out["corr"] = _pearson(pred, true)
        for k, lim in ((7, 3.0), (5, 2.0)):
            out[f"acc{k}"] = _acc(np.round(np.clip(pred, -lim, lim)), np.round(np.clip(true, -lim, lim)))
        has0_t, has0_p = true >= 0, pred >= 0
        out["acc2_has0"] = _acc(has0_p, has0_t)
        out["f1_has0"] = _wf1(has0_t, has0_p)
        nz = true != 0
        out["acc2_non0"] = _acc(pred[nz] > 0, true[nz] > 0)
        out["f1_non0"] = _wf1(true[nz] > 0, pred[nz] > 0)
        out["n_non0"] = int(nz.sum())
    elif convention == "sims":
        pred, true = np.clip(pred, -1.0, 1.0), np.clip(true, -1.0, 1.0)
        out["mae"] = float(np.mean(np.abs(pred - true)))
        out["corr"] = _pearson(pred, true)
        for k in (2, 3, 5):
            out[f"acc{k}"] = _acc(_sims_bins(pred, k), _sims_bins(true, k))
        out["f1"] = _wf1(_sims_bins(true, 2), _sims_bins(pred, 2))
    else:
        raise MsekitError(f"convention must be 'mosei' or 'sims' for regression, received {convention!r}")
    return out


def classification_metrics(
    y_pred: Sequence[int] | np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, weighted F1, a per-class table and the confusion matrix.

    Args:
        y_pred: (N,) predicted class indices.
        y_true: (N,) true class indices.
        label_names: Class names in index order (fixes the table's rows, absent classes too).

    Returns:
        ``convention``, ``n``, ``accuracy``, ``weighted_f1``, ``per_class`` (a list of dicts with
        ``label precision recall f1 support``) and ``confusion`` (C x C list, rows = true).
    """
    pred, true = _check_pair(y_pred, y_true, np.int64)
    classes = list(range(len(label_names)))
    bad = sorted(set(np.concatenate([pred, true]).tolist()) - set(classes))
    if bad:
        raise MsekitError(f"class indices {bad} are outside [0, {len(label_names)})")
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=classes, zero_division=0)
    return {
        "convention": "classification",
        "n": int(pred.size),
        "accuracy": float(np.mean(pred == true)),
        "weighted_f1": float(f1_score(true, pred, labels=classes, average="weighted", zero_division=0)),
        "per_class": [
            {"label": str(name), "precision": float(p[i]), "recall": float(r[i]),
             "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(label_names)
        ],
        "confusion": confusion_matrix(true, pred, labels=classes).tolist(),
    }


def primary_metric(task: str) -> tuple[str, bool]:
    """The early-stopping metric of a task and whether larger is better.

    Returns:
        ``("mae", False)`` for regression, ``("weighted_f1", True)`` for classification.
    """
    return ("weighted_f1", True) if task == "classification" else ("mae", False)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics dict (for logs and tables), in display order."""
    order = list(METRIC_INFO)
    keys = [k for k in order if k in metrics] + sorted(
        k for k in metrics if k not in METRIC_INFO and isinstance(metrics[k], int | float)
    )
    return {k: metrics[k] for k in keys if isinstance(metrics[k], int | float) and not isinstance(metrics[k], bool)}


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / inf float replaced by None (JSON has no NaN), recursively."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict ready for JSON: undefined values (NaN / inf, e.g. the correlation of a
    constant prediction) become null, and ``undefined`` counts them."""
    bad = sum(1 for v in metrics.values() if isinstance(v, float | np.floating) and not math.isfinite(v))
    return finite_json(metrics) | {"undefined": bad}


def compute_metrics(pred: Any, convention: str | None = None) -> dict[str, Any]:
    """Metrics of labelled predictions (``msekit.inference.Predictions``); unparsed answers are
    counted (``unparsed``) and left out.

    With nothing left to score the primary metric is the worst value (0 or inf), so that early
    stopping never prefers such an epoch.
    """
    labelled = (pred.labels >= 0) if pred.task == "classification" else np.isfinite(pred.labels)
    keep = pred.parsed & labelled
    n_unparsed = int((labelled & ~pred.parsed).sum())
    if not keep.any():
        name, higher = primary_metric(pred.task)
        convention = convention or choose_convention(pred.labels[labelled], pred.task)
        return {"convention": convention, "n": 0, "unparsed": n_unparsed, name: (0.0 if higher else math.inf)}
    if pred.task == "classification":
        m = classification_metrics(pred.values[keep], pred.labels[keep], pred.label_names)
    else:
        m = regression_metrics(pred.values[keep], pred.labels[keep], convention)
    m["unparsed"] = n_unparsed
    m["decode"] = pred.decode
    return m


def bootstrap_se(pred: Any, metric: str, draws: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of one metric of labelled predictions: the metric recomputed on
    ``draws`` resamples (with replacement, seeded: every call and every rank agrees) of the
    samples, and the standard deviation of those values.

    Examples:
        >>> from msekit.inference import Predictions
        >>> p = Predictions(ids=list("abcd"), task="classification", values=np.array([0, 1, 1, 0]),
        ...                 parsed=np.ones(4, bool), labels=np.array([0, 1, 0, 0]), label_names=["x", "y"])
        >>> 0.1 < bootstrap_se(p, "accuracy") < 0.4, bootstrap_se(p, "accuracy", seed=1) == bootstrap_se(p, "accuracy")
        (True, False)
    """
    from dataclasses import replace

    n = len(pred.ids)
    if n < 2:
        return 0.0
    convention = compute_metrics(pred).get("convention")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        i = rng.integers(0, n, n)
        sub = replace(pred, ids=[pred.ids[k] for k in i], values=pred.values[i], parsed=pred.parsed[i],
                      labels=pred.labels[i], probs=None, texts=None, failures=[])
        v = compute_metrics(sub, convention).get(metric)
        if isinstance(v, int | float) and math.isfinite(v):
            values.append(float(v))
    return float(np.std(values)) if len(values) > 1 else 0.0


def aggregate_metrics(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of every metric over seeds, as MMSA reports a multi-seed run.

    MMSA takes ``np.mean`` and ``np.std`` (population std, ddof 0) of each metric over the
    seeds; so does this. A metric undefined (NaN) in some seed is averaged over the others and
    its ``defined`` count says over how many.

    Args:
        per_seed: seed -> metrics dict of one run (same convention).

    Returns:
        ``{"n_seeds", "convention", "seeds": per_seed, "mean": {...}, "std": {...},
        "defined": {...}}``.
    """
    conventions = sorted({str(m.get("convention")) for m in per_seed.values()})
    keys: list[str] = []
    for m in per_seed.values():
        keys += [k for k in scalar_metrics(m) if k not in keys and k not in ("n", "n_non0", "unparsed")]
    mean, std, defined = {}, {}, {}
    for k in keys:
        vals = np.array([float(m[k]) for m in per_seed.values() if isinstance(m.get(k), int | float)], float)
        ok = vals[np.isfinite(vals)]
        mean[k] = float(ok.mean()) if ok.size else math.nan
        std[k] = float(ok.std()) if ok.size else math.nan
        defined[k] = int(ok.size)
    return {"n_seeds": len(per_seed), "convention": ", ".join(conventions), "seeds": per_seed,
            "mean": mean, "std": std, "defined": defined}
