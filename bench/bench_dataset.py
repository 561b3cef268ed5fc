"""Benchmark: a shuffled training epoch from a feature store vs from an MMSA pickle.

Builds an MMSA pickle of N MOSEI-sized samples (audio 500 x 74, video 375 x 35, 50 words of
text, float32 random features), imports it with ``msekit import`` (gzip store), packs the
'none' view with ``msekit align --mode none`` and then measures, each in a fresh process so that
peak RSS is that of the measurement alone:

- store: ``make_loader(..., shuffle=True)`` over every sample (batch 32, one process), twice
  (the second epoch is the steady state), plus once with ``normalize=True`` and once with 2
  workers;
- pickle: ``pickle.load`` of the whole file then an MMSA-style Dataset (tensor per sample,
  default collate), the way MMSA and the MSE-Adapter code load data.

It also measures the store on a store of N/10 samples to show that memory does not grow with the
store. Usage::

    .venv/bin/python bench/bench_dataset.py --n 20000 --workdir /tmp/msekit-bench

Needs about 4.2 GB of disk per 1,000 samples x 5 (pickle + gzip store + packed view) and
enough RAM to build the pickle (about 5 GB for 20,000 samples).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

TA, DA, TV, DV, WORDS = 500, 74, 375, 35, 50


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(workdir: Path, n: int) -> dict:
    import numpy as np

    from msekit.formats.mmsa import import_mmsa
    from msekit.views import align_store

    workdir.mkdir(parents=True, exist_ok=True)
    pkl, store = workdir / f"unaligned_{n}.pkl", workdir / f"store_{n}.h5"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    data = {"train": {
        "id": np.array([f"vid{k // 5}$_${k % 5}" for k in range(n)], dtype=object),
        "raw_text": np.array([" ".join(["word"] * WORDS) for _ in range(n)], dtype=object),
        "audio": rng.standard_normal((n, TA, DA), dtype=np.float32),
        "vision": rng.standard_normal((n, TV, DV), dtype=np.float32),
        "audio_lengths": np.full(n, TA, np.int64),
        "vision_lengths": np.full(n, TV, np.int64),
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
    }}
    with open(pkl, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    del data
    t1 = time.perf_counter()
    if store.exists():
        store.unlink()
    import_mmsa(pkl, store, trust_pickle=False)
    t2 = time.perf_counter()
    align_store(store, "none")
    t3 = time.perf_counter()
    return {"n": n, "write_pickle_s": round(t1 - t0, 1), "import_s": round(t2 - t1, 1),
            "pack_s": round(t3 - t2, 1), "pickle_gb": round(pkl.stat().st_size / 1e9, 2),
            "store_gb": round(store.stat().st_size / 1e9, 2)}


def measure_store(store: Path, normalize: bool, workers: int, epochs: int, batch: int) -> dict:
    import torch

    from msekit.dataset import ViewConfig, make_loader

    torch.set_num_threads(1)
    base = rss_mb()
    t0 = time.perf_counter()
    loader = make_loader(store, None, batch, shuffle=True, num_workers=workers,
                         view=ViewConfig(normalize=normalize), seed=0)
    setup = time.perf_counter() - t0
    rates = []
    for _ in range(epochs):
        t = time.perf_counter()
        n = 0
        for b in loader:
            n += len(b["ids"])
        rates.append(round(n / (time.perf_counter() - t)))
    return {"source": "store", "normalize": normalize, "workers": workers, "samples": n,
            "setup_s": round(setup, 2), "samples_per_s": rates, "rss_after_import_mb": round(base),
            "peak_rss_mb": round(rss_mb())}


def measure_pickle(pkl: Path, epochs: int, batch: int) -> dict:
    import torch
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(1)
    base = rss_mb()
    t0 = time.perf_counter()
    with open(pkl, "rb") as fh:
        data = pickle.load(fh)["train"]
    load = time.perf_counter() - t0

    class MMSADataset(Dataset):  # what MMSA's MMDataset.__getitem__ does
        def __len__(self):
            return len(data["id"])

        def __getitem__(self, i):
            return {"text": data["raw_text"][i], "audio": torch.Tensor(data["audio"][i]),
                    "vision": torch.Tensor(data["vision"][i]),
                    "audio_lengths": int(data["audio_lengths"][i]),
                    "vision_lengths": int(data["vision_lengths"][i]),
                    "labels": torch.tensor(float(data["regression_labels"][i])), "id": data["id"][i]}

    gen = torch.Generator()
    gen.manual_seed(0)
    loader = DataLoader(MMSADataset(), batch_size=batch, shuffle=True, generator=gen)
    rates = []
    for _ in range(epochs):
        t = time.perf_counter()
        n = 0
        for b in loader:
            n += len(b["id"])
        rates.append(round(n / (time.perf_counter() - t)))
    return {"source": "pickle", "samples": n, "load_s": round(load, 2), "samples_per_s": rates,
            "rss_after_import_mb": round(base), "peak_rss_mb": round(rss_mb())}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/msekit-bench"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--child", nargs="*")
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "build":
            res = build(a.workdir, int(rest[0]))
        elif kind == "store":
            res = measure_store(Path(rest[0]), rest[1] == "1", int(rest[2]), a.epochs, a.batch)
        else:
            res = measure_pickle(Path(rest[0]), a.epochs, a.batch)
        print(json.dumps(res))
        return
    small = max(100, a.n // 10)
    results = []
    if not a.skip_build:
        for n in (small, a.n):
            results.append(child(["build", str(n), "--workdir", str(a.workdir)]) | {"step": "build"})
            print(json.dumps(results[-1]), flush=True)
    common = ["--epochs", str(a.epochs), "--batch", str(a.batch)]
    runs = [["store", str(a.workdir / f"store_{a.n}.h5"), "0", "0"],
            ["store", str(a.workdir / f"store_{a.n}.h5"), "1", "0"],
            ["store", str(a.workdir / f"store_{a.n}.h5"), "0", "2"],
            ["store", str(a.workdir / f"store_{small}.h5"), "0", "0"],
            ["pickle", str(a.workdir / f"unaligned_{a.n}.pkl")]]
    for r in runs:
        results.append(child([*r, *common]) | {"file": Path(r[1]).name})
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
