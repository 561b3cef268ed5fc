"""Seed ensembles of bench/bench_cv.py runs: average the class probabilities of several seeds.

On a few dozen clips the training seed moves the cross-validated total by up to 9 clips of 60
(bench_cv.py at seeds 1111 and 2222). Averaging the adapters' class probabilities over seeds is
the most direct lever on that variance; this bench measures it on runs bench_cv.py already
made (its ``--out`` folders, one per seed, same folds), so no training happens here.

Usage::

    .venv/bin/python bench/bench_ensemble.py /tmp/cv_s1111 /tmp/cv_s2222 /tmp/cv_s3333 [--folds 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="bench_cv.py --out folders (run-<fold>/, stores/)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from msekit.llm import load_llm
    from msekit.predict import load_run, predict

    roots = [Path(r) for r in args.roots]
    llm, tok = None, None
    single = np.zeros(len(roots))
    hits, n = 0, 0
    for fold in range(args.folds):
        store = roots[0] / "stores" / f"fold-{fold}.h5"
        probs, labels = [], None
        for i, root in enumerate(roots):
            if llm is None:
                llm, tok = load_llm(load_run(root / f"run-{fold}").meta["llm_name"])
            run = load_run(root / f"run-{fold}", llm=llm, tokenizer=tok)
            pred = predict(run, [store], split="test")
            order = np.argsort(pred.ids)  # the same samples in the same order for every seed
            p, y = pred.probs[order], pred.labels[order]  # (N, C), (N,)
            if labels is not None and not np.array_equal(labels, y):
                raise SystemExit(f"{root}: fold {fold} holds other test samples than {roots[0]}")
            labels = y
            probs.append(p)
            single[i] += int((p.argmax(1) == y).sum())
        mean = np.mean(probs, axis=0)  # (N, C)
        hits += int((mean.argmax(1) == labels).sum())
        n += len(labels)
        print(f"fold {fold}: ensemble {int((mean.argmax(1) == labels).sum())}/{len(labels)}", flush=True)
    print(f"single seeds {[int(s) for s in single]} of {n}; mean {single.mean():.1f}")
    print(f"ensemble of {len(roots)} (mean class probabilities): {hits}/{n} = {100 * hits / n:.1f}%")


if __name__ == "__main__":
    main()
