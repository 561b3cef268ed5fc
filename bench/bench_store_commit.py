"""Cost of the store's commit path: samples committed one by one, as `msekit extract` does.

    PYTHONPATH=. python bench/bench_store_commit.py [--samples 500] [--out /tmp/b.h5]

Each sample is 3.5 s of eGeMAPS LLD (350 x 25) and 5 fps video (18 x 24), the sizes of a
RAVDESS clip at --fps 5. Prints the commit rate, the file size and the read rate of every
sample back (a reader opens the store lock-free).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from msekit.store import Modality, Sample, StoreReader, StoreWriter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--out", default="/tmp/bench_store_commit.h5")
    a = ap.parse_args()
    out = Path(a.out)
    out.unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    names = {"audio": [f"a{k}" for k in range(25)], "video": [f"v{k}" for k in range(24)]}

    def mod(t, d):
        return Modality(rng.normal(size=(t, d)).astype(np.float32),
                        np.c_[np.arange(t), np.arange(t) + 1] * 0.01, np.ones(t, bool))

    samples = [Sample(id=f"clip{i:05d}", text="kids are talking by the door", label="neutral",
                      token_ids=np.arange(8, dtype=np.int32),
                      modalities={"audio": mod(350, 25), "video": mod(18, 24)})
               for i in range(a.samples)]
    t0 = time.perf_counter()
    with StoreWriter(out, {"bench": 1}, names) as w:
        for s in samples:
            w.add(s)
            w.commit()
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    with StoreReader(out) as r:
        n = sum(len(x.modalities["audio"].data) for x in r)
    rt = time.perf_counter() - t1
    print(f"{a.samples} commits in {dt:.2f} s = {a.samples / dt:.0f} samples/s "
          f"({1000 * dt / a.samples:.2f} ms each); file {out.stat().st_size / 1e6:.1f} MB; "
          f"read back {a.samples / rt:.0f} samples/s ({n} audio rows)")


if __name__ == "__main__":
    main()
