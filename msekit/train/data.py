"""The training data of a run: the three splits of the store as datasets, one normalization.

The train split's statistics are computed once (``StoreDataset`` with ``normalize``) and
handed to the validation and test datasets, and saved in the adapter so that prediction
applies the very same ``(x - mean) / std`` under the store's frame mask. A store without
splits gets a grouped, seeded split made on the fly (``msekit.splits``), recorded in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msekit.dataset import MODALITIES, EmptySplitError, StoreDataset, ViewConfig
from msekit.errors import MsekitError
from msekit.labels import check_classes, check_label_request
from msekit.splits import empty_splits, group_keys, make_splits, parse_ratios, read_split_columns
from msekit.train.config import TrainConfig


@dataclass
class RunData:
    """Datasets and the data facts a run records."""

    train: StoreDataset
    valid: StoreDataset
    test: StoreDataset | None
    pool: list[int]  # labelled training samples
    view: ViewConfig
    split: dict[str, Any] = field(default_factory=dict)  # how the splits were made

    @property
    def task(self) -> str:
        return self.train.task

    @property
    def label_names(self) -> list[str] | None:
        return self.train.label_names

    def evals(self) -> dict[str, StoreDataset]:
        """The splits scored when the run ends: valid, and test when the store has one."""
        return {"valid": self.valid} | ({"test": self.test} if self.test is not None else {})

    def norm_meta(self) -> dict[str, Any]:
        """Normalization and dropped modalities, as the adapter's meta records them."""
        return {"norm": {m: {"mean": mu.tolist(), "std": sd.tolist()} for m, (mu, sd) in self.train.norm.items()},
                "drop": [m for m in MODALITIES if m not in (self.view.modalities or MODALITIES)]}


def split_policy(cfg: TrainConfig, notice) -> dict[str, Any]:
    """Whether the run uses the store's splits or makes its own (and tells the user).

    Returns:
        ``{"made_by": "store"}`` or ``{"made_by": "msekit train", "seed", "ratios", "groups",
        <split>: count}``.

    Raises:
        MsekitError: a split made here would leave a split empty.
    """
    cols = read_split_columns(cfg.store)
    if cfg.split_seed is None and any(cols["split"]):
        return {"made_by": "store"}
    seed = 0 if cfg.split_seed is None else cfg.split_seed
    ratios = parse_ratios(cfg.ratios)
    splits = make_splits(cols["id"], cols["group"], ratios, seed, cols["source"])
    counts = {k: splits.count(k) for k in ("train", "valid", "test")}
    groups = len(set(group_keys(cols["id"], cols["group"], cols["source"])))
    empty = empty_splits(splits, ratios)
    if empty:
        raise MsekitError(f"{cfg.store}: a split with --ratios {','.join(map(str, cfg.ratios))} leaves {empty} "
                          f"empty ({len(splits)} samples in {groups} groups); add samples or change --ratios")
    why = "the store has no splits" if cfg.split_seed is None else f"--split-seed {seed}"
    notice(f"{why}: grouped split with seed {seed}, ratios {'/'.join(f'{r:g}' for r in ratios)} over "
           f"{groups} groups (train {counts['train']}, valid {counts['valid']}, test {counts['test']}); "
           "recorded in train_config.json")
    return {"made_by": "msekit train", "seed": seed, "ratios": list(ratios), "groups": groups, **counts}


def load_run_data(cfg: TrainConfig, notice=print) -> RunData:
    """The datasets of a run, checked before any model is built.

    Raises:
        MsekitError: a missing store, an empty train or validation split, unlabelled training
            data, fewer than two classes, classes with a regression task.
    """
    from pathlib import Path

    if not Path(cfg.store).is_file():
        raise MsekitError(f"store not found: {cfg.store!r} (make one with `msekit extract`)")
    check_label_request(cfg.task, cfg.label_names, cfg.store)
    split = split_policy(cfg, notice)
    own = split["made_by"] != "store"
    view = ViewConfig(align=cfg.align, max_len=cfg.max_len, normalize=cfg.normalize, modalities=list(cfg.modalities),
                      task="classification" if cfg.label_names else cfg.task, label_names=cfg.label_names,
                      unknown_labels="drop" if cfg.label_names else "error",
                      split_seed=split.get("seed") if own else None,
                      split_ratios=tuple(split["ratios"]) if own else (0.8, 0.1, 0.1))
    train = StoreDataset(cfg.store, cfg.train_split, view)
    # valid / test: the train split's task, classes and statistics
    view.task, view.label_names, view.norm = train.task, train.label_names, train.norm
    valid = StoreDataset(cfg.store, cfg.valid_split, view)
    try:
        test = StoreDataset(cfg.store, cfg.test_split, view)
    except EmptySplitError:
        test = None  # the test split is optional
    pool = [i for i, y in enumerate(train.labels) if y is not None]
    if not pool:
        raise MsekitError(f"{cfg.store}: the {cfg.train_split!r} split has no labelled samples")
    if train.task == "classification":
        check_classes(train.label_names, [train.label_names[train.labels[i]] for i in pool], cfg.store)
    return RunData(train=train, valid=valid, test=test, pool=pool, view=view, split=split)
