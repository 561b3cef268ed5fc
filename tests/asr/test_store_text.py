"""The per-sample text fields of the store: round trip, merge, and stores written before them."""

from __future__ import annotations

import h5py
import numpy as np

from msekit.store import Sample, StoreReader, StoreWriter, merge_stores


def _sample(i: int, source: str) -> Sample:
    return Sample(id=f"s{i}", text=f"hello {i}", words=["hello", str(i)],
                  word_times=np.array([[0.0, 0.5], [0.5, 0.9]]),
                  word_probs=np.array([0.9, 0.5]) if source == "asr" else None,
                  text_source=source, asr_model="base" if source == "asr" else "",
                  language="en", asr_logprob=-0.25 if source == "asr" else float("nan"),
                  asr_no_speech=0.01 if source == "asr" else float("nan"))


def test_text_fields_round_trip_and_merge(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path, i, src in ((a, 1, "asr"), (b, 0, "given")):
        with StoreWriter(path, {"x": 1}, {}) as w:
            w.add(_sample(i, src))
    merge_stores([a, b], tmp_path / "m.h5")
    with StoreReader(tmp_path / "m.h5") as r:
        s0, s1 = r.sample("s0"), r.sample("s1")
    assert (s1.text_source, s1.asr_model, s1.language) == ("asr", "base", "en")
    np.testing.assert_allclose(s1.probs(), [0.9, 0.5])
    assert s1.asr_logprob == -0.25 and s1.asr_no_speech == 0.01
    assert s0.text_source == "given" and np.all(np.isnan(s0.probs()))
    assert np.isnan(s0.asr_logprob)


def test_a_store_without_the_text_fields_reads_and_resumes(tmp_path):
    path = tmp_path / "old.h5"
    with StoreWriter(path, {"x": 1}, {}) as w:
        w.add(_sample(0, "given"))
    with h5py.File(path, "a") as f:  # as written before these fields existed
        for name in ("text_source", "asr_model", "language", "asr_logprob", "asr_no_speech"):
            del f["samples"][name]
        del f["text/word_prob"]
    with StoreReader(path) as r:
        old = r.sample(0)
    assert old.text == "hello 0" and old.text_source == "" and len(old.probs()) == 2
    with StoreWriter(path, {"x": 1}, {}) as w:  # resuming adds them, old rows get defaults
        w.add(_sample(1, "asr"))
    with StoreReader(path) as r:
        s0, s1 = r.sample(0), r.sample(1)
    assert s0.text_source == "" and np.isnan(s0.asr_logprob) and np.all(np.isnan(s0.probs()))
    assert s1.text_source == "asr" and s1.asr_logprob == -0.25
    np.testing.assert_allclose(s1.probs(), [0.9, 0.5])
