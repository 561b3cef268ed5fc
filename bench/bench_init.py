"""Adapter init 'paper' vs 'scaled' against the linear probe, on one store, over seeds.

Trains one run per (init, seed) through the Python API with the frozen LLM loaded once, and
prints valid / test accuracy and weighted F1 of the adapter beside the probe's (same splits).
Not a speed benchmark: the figures are accuracies, so a loaded machine only makes it slower.

Usage::

    .venv/bin/python bench/bench_init.py STORE [--preset ravdess-smollm2-135m] [--seeds 1111,5555]
        [--inits paper,scaled] [--threads 1] [--set key=value ...] [--out /tmp/bench_init]

Example (issue 9): a store from ``msekit extract data/ravdess --labels data/ravdess/arousal.csv
--fps 5 --functionals --out features.h5``, then ``bench/bench_init.py features.h5 --seeds 5555``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--preset", default="ravdess-smollm2-135m", help="'' for msekit's plain defaults")
    ap.add_argument("--seeds", default="1111,5555")
    ap.add_argument("--inits", default="paper,scaled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="more TrainConfig fields, key=value")
    ap.add_argument("--out", default="/tmp/bench_init")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from msekit.llm import load_llm
    from msekit.train.config import resolve_config
    from msekit.train.loop import train

    extra = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    preset = args.preset or None
    llm_name = extra.get("llm") or (resolve_config(preset).llm)
    llm, tok = load_llm(llm_name)
    rows = []
    for init in args.inits.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = resolve_config(preset, store=args.store, out=f"{args.out}/{init}-{seed}", seed=seed, init=init,
                                 overwrite=True, progress=False, report=False, **extra)
            t0 = time.time()
            res = train(cfg, llm=llm, tokenizer=tok)
            final = json.loads((Path(res.run_dir) / "final_metrics.json").read_text())
            split, probe = final["splits"], final.get("baseline") or {}
            row = {"init": init, "seed": seed, "best_epoch": res.best_epoch, "seconds": round(time.time() - t0)}
            for name in ("valid", "test"):
                for key in ("accuracy", "weighted_f1"):
                    row[f"{name}_{key}"] = split.get(name, {}).get(key)
                    row[f"probe_{name}_{key}"] = probe.get(name, {}).get(key)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for init in args.inits.split(","):
        mine = [r for r in rows if r["init"] == init]
        for key in ("valid_accuracy", "test_accuracy", "test_weighted_f1", "probe_test_accuracy"):
            vals = [r[key] for r in mine if r[key] is not None]
            if vals:
                print(f"{init:7s} {key:20s} {100 * statistics.mean(vals):6.2f} +- {100 * statistics.pstdev(vals):5.2f}")


if __name__ == "__main__":
    main()
