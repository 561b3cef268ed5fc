"""The adapter against the linear probe by K-fold cross-validation on one small store.

On a store of a few dozen clips one held-out clip is several points of accuracy, so a single
split cannot tell a recipe change from noise. This bench rotates the splits instead: the
labelled samples are dealt into K stratified parts; fold k tests on part k, validates (early
stopping) on part k+1 and trains on the rest. Every sample is tested once, so the adapter and
the probe are compared over all of them, on the same folds. The frozen LLM is loaded once.
Not a speed benchmark.

Usage::

    .venv/bin/python bench/bench_cv.py STORE [--folds 4] [--seed 1111] [--threads 2]
        [--preset NAME] [--set key=value ...] [--only 1,2] [--out /tmp/bench_cv]

Example (issue 9, the 8-emotion stand-in): ``msekit extract data/ravdess --labels
data/ravdess/labels.csv --fps 5 --functionals --out emo.h5``, then ``bench/bench_cv.py emo.h5``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

from bench_init import _value  # key=value parsing shared with bench/bench_init.py


def deal(ids: list[str], labels: list[str], k: int, seed: int) -> list[list[str]]:
    """Stratified parts: each label's ids shuffled, then dealt round-robin, continuing the deal."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for sid, y in zip(ids, labels, strict=True):
        by_label[y].append(sid)
    rng = random.Random(seed)
    parts: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for y in sorted(by_label):
        group = sorted(by_label[y])
        rng.shuffle(group)
        for sid in group:
            parts[turn % k].append(sid)
            turn += 1
    return parts


def store_folds(store: str, k: int) -> tuple[dict[str, str], list[list[str]]]:
    """The store's labelled ids (id -> label) and their K stratified parts (the deal uses seed 0)."""
    from msekit.store import StoreReader

    with StoreReader(store) as r:
        ids = [str(x) for x in r.ids]
        raw = [x.decode() if isinstance(x, bytes) else str(x) for x in r.column("label")]
    labels = {sid: y for sid, y in zip(ids, raw, strict=True) if y not in ("", "nan")}
    return labels, deal(list(labels), list(labels.values()), k, seed=0)


def fold_store(store: Path, out: Path, parts: list[list[str]], fold: int, labels: dict[str, str]) -> Path:
    """A copy of the store whose split column is fold ``fold``'s."""
    from msekit.relabel import relabel

    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"fold-{fold}.h5"
    shutil.copyfile(store, dst)
    side = Path(f"{store}.config.json")
    if side.exists():
        shutil.copyfile(side, Path(f"{dst}.config.json"))
    k = len(parts)
    role = {sid: "test" for sid in parts[fold]}
    role.update({sid: "valid" for sid in parts[(fold + 1) % k]})
    table = out / f"fold-{fold}.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "split"])
        for sid, y in labels.items():
            w.writerow([sid, y, role.get(sid, "train")])
    relabel(dst, table)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1111, help="training seed; the deal uses 0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="", help="a preset name; '' for msekit's plain defaults")
    ap.add_argument("--set", nargs="*", default=[], help="more TrainConfig fields, key=value")
    ap.add_argument("--out", default="/tmp/bench_cv")
    ap.add_argument("--only", default="", help="run only these folds, e.g. 1,2 (totals over them)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from msekit.llm import load_llm
    from msekit.train.config import resolve_config
    from msekit.train.loop import train

    labels, parts = store_folds(args.store, args.folds)
    extra = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    preset = args.preset or None
    llm, tok = load_llm(extra.get("llm") or resolve_config(preset).llm)
    out = Path(args.out)
    totals = {"adapter": 0.0, "probe": 0.0, "adapter_valid": 0.0, "probe_valid": 0.0, "n": 0}
    t_all = time.time()
    chosen = [int(x) for x in args.only.split(",")] if args.only else list(range(args.folds))
    for fold in chosen:
        store = fold_store(Path(args.store), out / "stores", parts, fold, labels)
        cfg = resolve_config(preset, store=str(store), out=str(out / f"run-{fold}"), seed=args.seed,
                             overwrite=True, progress=False, report=False, **extra)
        t0 = time.time()
        res = train(cfg, llm=llm, tokenizer=tok)
        final = json.loads((Path(res.run_dir) / "final_metrics.json").read_text())
        split, probe = final["splits"], final.get("baseline") or {}
        n_test, n_valid = len(parts[fold]), len(parts[(fold + 1) % args.folds])
        row = {"fold": fold, "best_epoch": res.best_epoch, "seconds": round(time.time() - t0),
               "test": split["test"]["accuracy"], "probe_test": probe.get("test", {}).get("accuracy"),
               "valid": split["valid"]["accuracy"], "probe_valid": probe.get("valid", {}).get("accuracy")}
        print(json.dumps(row), flush=True)
        totals["adapter"] += row["test"] * n_test
        totals["adapter_valid"] += row["valid"] * n_valid
        totals["probe"] += (row["probe_test"] or 0.0) * n_test
        totals["probe_valid"] += (row["probe_valid"] or 0.0) * n_valid
        totals["n"] += n_test
    n = totals["n"]
    print(f"{len(chosen)} of {args.folds} folds, {n} samples each tested once, {round(time.time() - t_all)} s")
    print(f"adapter test {totals['adapter']:.0f}/{n} = {100 * totals['adapter'] / n:.1f}%  "
          f"valid {100 * totals['adapter_valid'] / n:.1f}%")
    print(f"probe   test {totals['probe']:.0f}/{n} = {100 * totals['probe'] / n:.1f}%  "
          f"valid {100 * totals['probe_valid'] / n:.1f}%")


if __name__ == "__main__":
    main()
