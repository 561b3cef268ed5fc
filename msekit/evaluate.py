"""Evaluating a trained run on a split of a store (``msekit evaluate``), in the MMSA conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msekit.errors import MsekitError
from msekit.metrics import CONVENTIONS, choose_convention
from msekit.predict import Run, check_store_features, load_run, predict_dataset
from msekit.train import compute_metrics


def evaluate(run: Run | str | Path, store: str | Path, *, split: str | None = "test",
             convention: str | None = None, decode: str = "score", batch_size: int = 16,
             progress: bool = False) -> dict[str, Any]:
    """Predicts a split of a store and computes its metrics.

    Args:
        run: a loaded :class:`~msekit.predict.Run`, or a run / adapter folder.
        store: the feature store (extracted with the adapter's settings).
        split: the split to evaluate (None: every sample).
        convention: ``mosei``, ``sims`` or ``classification``; None picks it from the task and
            the label range (|y| <= 1: sims, else mosei).
        decode: ``score`` or ``generate``.
        batch_size: samples per forward pass.
        progress: a progress bar on stderr.

    Returns:
        The metrics dict (``convention``, ``n``, ``unparsed``, the convention's metrics, and
        for classes ``per_class`` and ``confusion``) plus ``split``, ``decode``, ``store``.

    Raises:
        MsekitError: a store without labels in that split, features that do not match, or a
            convention that does not fit the task.
    """
    from msekit.dataset import StoreDataset

    if convention is not None and convention not in CONVENTIONS:
        raise MsekitError(f"convention must be one of {CONVENTIONS}, received {convention!r}")
    if not isinstance(run, Run):
        run = load_run(run)
    check_store_features(run, store)
    ds = StoreDataset(store, split, run.view())
    labelled = [i for i, y in enumerate(ds.labels) if y is not None]
    if not labelled:
        raise MsekitError(f"{store}: split {split!r} has no labels to evaluate against")
    task = run.meta["task"]
    if convention is None:
        convention = choose_convention([ds.labels[i] for i in labelled], task)
    if (task == "classification") != (convention == "classification"):
        raise MsekitError(f"convention {convention!r} does not fit the task {task!r}")
    pred = predict_dataset(run.model, ds, labelled, batch_size=batch_size, decode=decode,
                           transform=run.transform, progress=progress)
    metrics = compute_metrics(pred, None if task == "classification" else convention)
    metrics.update(split=split, decode=decode, store=str(store), seconds=round(pred.seconds, 2))
    return metrics
