"""Evaluating a trained run on a split of a store (``msekit evaluate``), in the MMSA conventions.

A multi-seed run folder (``OUT/seed-<s>/``, see ``msekit.train.seeds``) is evaluated seed by
seed and summarized as mean +- std over the seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msekit.errors import MsekitError
from msekit.inference import predict_dataset
from msekit.metrics import CONVENTIONS, aggregate_metrics, choose_convention, compute_metrics
from msekit.predict import Run, check_store_features, load_run


def seed_runs(path: str | Path) -> list[Path]:
    """The seed folders of a multi-seed run folder (sorted by seed), [] for a plain run."""
    p = Path(path)
    if not p.is_dir() or (p / "adapter").is_dir():
        return []
    found = [d for d in p.glob("seed-*") if (d / "adapter" / "adapter_config.json").is_file()]
    return sorted(found, key=lambda d: int(d.name.split("-", 1)[1]) if d.name[5:].isdigit() else 0)


def evaluate(run: Run | str | Path, store: str | Path, *, split: str | None = "test",
             convention: str | None = None, decode: str = "score", batch_size: int = 16,
             device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Predicts a split of a store and computes its metrics.

    Args:
        run: a loaded :class:`~msekit.predict.Run`, a run / adapter folder, or a multi-seed
            run folder (then the result is :func:`evaluate_seeds`'s).
        store: the feature store (extracted with the adapter's settings).
        split: the split to evaluate (None: every sample).
        convention: ``mosei``, ``sims`` or ``classification``; None picks it from the task and
            the label range (|y| <= 1: sims, else mosei).
        decode: ``score`` or ``generate``.
        batch_size: samples per forward pass.
        device: where to load the LLM when ``run`` is a folder.
        progress: a progress bar on stderr.

    Returns:
        The metrics dict (``convention``, ``n``, ``unparsed``, the convention's metrics, and
        for classes ``per_class`` and ``confusion``) plus ``split``, ``decode``, ``store``,
        ``seconds`` (model time).

    Raises:
        MsekitError: a store without labels in that split, features that do not match, or a
            convention that does not fit the task.
    """
    from msekit.tokenfp import dataset_for_model

    if convention is not None and convention not in CONVENTIONS:
        raise MsekitError(f"convention must be one of {CONVENTIONS}, received {convention!r}")
    if not isinstance(run, Run):
        if seed_runs(run):
            return evaluate_seeds(run, store, split=split, convention=convention, decode=decode,
                                  batch_size=batch_size, device=device, progress=progress)
        run = load_run(run, device=device)
    check_store_features(run, store)
    ds = dataset_for_model(store, split, run.view(), run.model)
    labelled = [i for i, y in enumerate(ds.labels) if y is not None]
    if not labelled:
        raise MsekitError(f"{store}: split {split!r} has no labels to evaluate against")
    task = run.meta["task"]
    if convention is None:
        convention = choose_convention([ds.labels[i] for i in labelled], task)
    if (task == "classification") != (convention == "classification"):
        raise MsekitError(f"convention {convention!r} does not fit the task {task!r}")
    pred = predict_dataset(run.model, ds, labelled, batch_size=batch_size, decode=decode, progress=progress)
    metrics = compute_metrics(pred, None if task == "classification" else convention)
    metrics.update(split=split, decode=decode, store=str(store), seconds=round(pred.seconds, 2))
    return metrics


def evaluate_seeds(path: str | Path, store: str | Path, **kw: Any) -> dict[str, Any]:
    """Evaluates every seed of a multi-seed run folder; mean +- std over the seeds.

    Returns:
        ``{"seeds": {seed: metrics}, "mean": {...}, "std": {...}, "n_seeds", "convention",
        "split", "store"}``.

    Raises:
        MsekitError: the folder holds no finished seed.
    """
    runs = seed_runs(path)
    if not runs:
        raise MsekitError(f"{path}: no seed-<s>/adapter folders; not a multi-seed run folder")
    per_seed: dict[str, dict[str, Any]] = {}
    llm = None
    for d in runs:
        r = load_run(d, device=kw.get("device"), **({} if llm is None else {"llm": llm[0], "tokenizer": llm[1]}))
        llm = (r.model.llm, r.model.tokenizer)  # one LLM for every seed
        per_seed[d.name.split("-", 1)[1]] = evaluate(r, store, **{k: v for k, v in kw.items() if k != "device"})
    return aggregate_metrics(per_seed) | {"split": kw.get("split"), "store": str(store)}


from msekit import callable_module  # noqa: E402

callable_module(__name__)  # msekit.evaluate(...) calls evaluate(...)
