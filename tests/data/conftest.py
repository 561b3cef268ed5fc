"""Small hand-made stores and foreign-format files for the data tests."""

from __future__ import annotations

import numpy as np
import pytest

from msekit.store import Modality, Sample, StoreWriter

NAMES = {"audio": ["a0", "a1"], "video": ["v0", "v1", "v2"]}


def make_store(path, n=30, seed=0, labels="regression", splits=True, missing_every=0):
    """A store of n samples from n // 3 videos; audio at 10 Hz, video at 5 Hz, words."""
    rng = np.random.default_rng(seed)
    with StoreWriter(path, {"test": seed}, NAMES) as w:
        for i in range(n):
            ta, tv = int(rng.integers(3, 20)), int(rng.integers(1, 10))
            if missing_every and i % missing_every == 0:
                ta = 0
            lab = (str(round(float(rng.normal()), 3)) if labels == "regression"
                   else ["joy", "anger", "neutral"][i % 3] if labels == "classification" else "")
            split = ("train", "train", "train", "valid", "test")[(i // 3) % 5] if splits else ""
            w.add(Sample(
                id=f"vid{i // 3}/clip{i}", text=f"text {i}", label=lab, split=split,
                group=f"vid{i // 3}", duration=2.0, words=["a", "b", "c"],
                word_times=np.array([[0.0, 0.5], [0.5, 1.2], [1.5, 2.0]]),
                modalities={
                    "audio": Modality(rng.normal(size=(ta, 2)),
                                      np.c_[np.arange(ta), np.arange(ta) + 1] * 0.1, np.ones(ta, bool)),
                    "video": Modality(rng.normal(size=(tv, 3)),
                                      np.c_[np.arange(tv), np.arange(tv) + 1] * 0.2, rng.random(tv) > 0.3),
                }))
    return path


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.h5")
