"""A linear probe beside every adapter: does the LLM add anything over the features themselves?

The probe is fitted on the train split's utterance means (the mean of each modality's valid
frames, after the run's normalization, the modalities concatenated) and scored on the same
valid / test splits as the adapter: logistic regression for classes, ridge regression for
values (scikit-learn, features standardized, default regularization). Text is not used.

Examples:
    >>> import numpy as np
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> fit_probe(x, y, "classification").predict(np.array([[0.2], [2.8]])).tolist()
    [0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from msekit.metrics import classification_metrics, json_metrics, regression_metrics


def utterance_means(ds, indices: list[int], batch_size: int = 64) -> np.ndarray:
    """(N, D) mean of each read modality's frames per sample (zeros where a modality is missing)."""
    from torch.utils.data import DataLoader

    from msekit.dataset import collate

    mods = list(getattr(ds, "read_modalities", []))
    rows = []
    for batch in DataLoader(ds, batch_size=batch_size, sampler=indices, collate_fn=collate):
        parts = []
        for m in mods:
            x, n = batch[m], batch[f"{m}_lengths"]  # (B, T, D), (B,)
            total = x.sum(dim=1)  # (B, D): padding rows are 0
            parts.append((total / n.clamp(min=1).unsqueeze(-1)).numpy())
        rows.append(np.concatenate(parts, axis=1) if parts else np.zeros((len(batch["ids"]), 0)))
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def fit_probe(x: np.ndarray, y: np.ndarray, task: str):
    """A fitted scikit-learn pipeline: standardize, then logistic regression or ridge."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = LogisticRegression(max_iter=2000) if task == "classification" else Ridge(alpha=1.0)
    return make_pipeline(StandardScaler(), head).fit(x, y)


def linear_probe(train_ds, evals: dict[str, Any], pool: list[int] | None = None) -> dict[str, Any] | None:
    """Fits the probe on ``train_ds`` and scores it on each dataset of ``evals``.

    Args:
        train_ds: the run's training StoreDataset (task, labels, label_names).
        evals: split name -> StoreDataset.
        pool: labelled training indices (default: every labelled sample).

    Returns:
        ``{"model", "features", <split>: metrics}``, or None when there are no non-text
        features or fewer than two classes to fit on.
    """
    task = train_ds.task
    pool = pool if pool is not None else [i for i, y in enumerate(train_ds.labels) if y is not None]
    x = utterance_means(train_ds, pool)
    y = np.array([train_ds.labels[i] for i in pool])
    if x.shape[1] == 0 or (task == "classification" and len(set(y.tolist())) < 2):
        return None
    probe = fit_probe(x, y, task)
    name = "logistic regression" if task == "classification" else "ridge regression"
    out: dict[str, Any] = {"model": f"{name} on utterance means ({', '.join(train_ds.read_modalities)})",
                           "features": int(x.shape[1])}
    for split, ds in evals.items():
        idx = [i for i, v in enumerate(ds.labels) if v is not None]
        if not idx:
            continue
        pred = probe.predict(utterance_means(ds, idx))
        true = np.array([ds.labels[i] for i in idx])
        m = (classification_metrics(pred, true, ds.label_names) if task == "classification"
             else regression_metrics(pred, true))
        out[split] = json_metrics({k: v for k, v in m.items() if k not in ("per_class", "confusion")})
    return out
