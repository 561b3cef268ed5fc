from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from msekit.errors import StoreError
from msekit.store import Modality, Sample, StoreReader, StoreWriter

NAMES = {"audio": [f"a{i}" for i in range(3)], "video": ["AU01", "AU02"]}


def _sample(i: int, ta: int, tv: int) -> Sample:
    rng = np.random.default_rng(i)
    return Sample(
        id=f"vid/{i} é", text=f"text {i}", label=str(i * 0.5), split="train", source=f"{i}.mp4",
        duration=ta * 0.01, token_ids=np.arange(i + 1, dtype=np.int32),
        words=["a", "b"][: i % 3], word_times=np.zeros((min(i % 3, 2), 2)),
        modalities={
            "audio": Modality(rng.normal(size=(ta, 3)), np.c_[np.arange(ta), np.arange(ta) + 1] * 0.01,
                              np.ones(ta, bool)),
            "video": Modality(rng.random((tv, 2)), np.zeros((tv, 2)), rng.random(tv) > 0.3),
        },
    )


def test_round_trip_ragged_and_odd_ids(tmp_path):
    path = tmp_path / "s.h5"
    samples = [_sample(0, 5, 2), _sample(1, 0, 3), _sample(2, 7, 0)]
    with StoreWriter(path, {"a": 1}, NAMES) as w:
        for s in samples:
            w.add(s)
        w.add_failure("bad", "bad.mp4", "decode", "truncated")
    with StoreReader(path) as r:
        assert r.ids == [s.id for s in samples]
        for s in samples:
            got = r.sample(s.id)
            assert got.text == s.text and got.label == s.label
            np.testing.assert_array_equal(got.token_ids, s.token_ids)
            assert got.words == s.words
            for m in NAMES:
                np.testing.assert_allclose(got.modalities[m].data, s.modalities[m].data, rtol=1e-6)
                np.testing.assert_array_equal(got.modalities[m].mask, s.modalities[m].mask)
        assert r.failures() == [{"id": "bad", "path": "bad.mp4", "stage": "decode", "reason": "truncated"}]
        assert r.feature_names("video") == ["AU01", "AU02"]


def test_resume_appends_and_refuses_other_settings(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, {"a": 1}, NAMES) as w:
        w.add(_sample(0, 4, 4))
    with StoreWriter(path, {"a": 1}, NAMES) as w:
        assert w.existing_ids() == {"vid/0 é"}
        w.add(_sample(1, 2, 2))
    assert len(StoreReader(path)) == 2
    with pytest.raises(StoreError, match="other settings"):
        StoreWriter(path, {"a": 2}, NAMES)
    assert len(StoreReader(path)) == 2  # the refused writer lost nothing


def test_uncommitted_rows_are_ignored_then_truncated(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, {"a": 1}, NAMES) as w:
        w.add(_sample(0, 4, 4))
    # Simulate a crash mid-commit: rows appended but n_samples not bumped.
    with h5py.File(path, "a") as f:
        f["samples/id"].resize(2, axis=0)
        f["samples/id"][1] = "half-written"
        f["audio/data"].resize(9, axis=0)
    with StoreReader(path) as r:
        assert r.ids == ["vid/0 é"]
    with StoreWriter(path, {"a": 1}, NAMES) as w:
        w.add(_sample(1, 3, 1))
    with StoreReader(path) as r:
        assert r.ids == ["vid/0 é", "vid/1 é"]
        assert r.modality(1, "audio").data.shape == (3, 3)


def test_not_a_store(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        StoreReader(p)
    with pytest.raises(StoreError, match="no such store"):
        StoreReader(tmp_path / "missing.h5")


def test_failure_only_commits_keep_offsets_aligned(tmp_path):
    """A commit holding only failures writes no offset row (msekit 0.1 wrote a stray 0, which
    shifted the frames of every later sample), and stores with such rows still read right."""
    import h5py

    path = tmp_path / "s.h5"
    names = {"audio": ["a0"]}

    def mod(v, t):
        return Modality(np.full((t, 1), v), np.zeros((t, 2)), np.ones(t, bool))

    with StoreWriter(path, {"k": 1}, names) as w:
        w.add(Sample(id="a", modalities={"audio": mod(1.0, 3)}))
        w.commit()
        w.add_failure("bad", "bad.mp4", "probe", "broken")
        w.commit()
        w.add(Sample(id="b", modalities={"audio": mod(2.0, 4)}))
    with h5py.File(path, "r") as f:
        assert f["samples/audio_offset"].shape == f["samples/audio_length"].shape == (2,)
    with StoreReader(path) as r:
        assert r.modality(1, "audio").data.ravel().tolist() == [2.0] * 4
    with h5py.File(path, "a") as f:  # the layout an msekit 0.1 run left behind
        ds = f["samples/audio_offset"]
        ds.resize(3, axis=0)
        ds[:] = [0, 3, 3]
    with StoreReader(path) as r:
        assert r.modality(1, "audio").data.ravel().tolist() == [2.0] * 4
    with StoreWriter(path, {"k": 1}, names) as w:  # a writer repairs the column
        pass
    with h5py.File(path, "r") as f:
        assert f["samples/audio_offset"][:].tolist() == [0, 3]


def _names():
    return {"audio": ["a0", "a1"]}


def _one(sid, t=50, v=1.0):
    return Sample(id=sid, text=f"text {sid}", label="1.0",
                  modalities={"audio": Modality(np.full((t, 2), v), np.zeros((t, 2)),
                                                np.ones(t, bool))})


def _read_all(path):
    with StoreReader(path) as r:
        return {s.id: s.modalities["audio"].data.tobytes() + s.text.encode() for s in r}


def test_a_failed_write_rolls_back_to_the_last_commit(tmp_path, monkeypatch):
    """ENOSPC in the middle of a commit (injected) leaves the store at its last commit."""
    from msekit import journal
    from msekit.store import DiskFullError

    path = tmp_path / "s.h5"
    with StoreWriter(path, {"k": 1}, _names()) as w:
        for k in range(3):
            w.add(_one(f"s{k}"))
            w.commit()
    before = _read_all(path)
    monkeypatch.setenv("MSEKIT_FAULT_WRITE_LIMIT", "3000")
    monkeypatch.setattr(journal, "_written", [0])
    w = StoreWriter(path, {"k": 1}, _names())
    w.add(_one("s3", t=2000, v=2.0))
    with pytest.raises(DiskFullError, match=f"disk full writing {path}: 3 samples committed"):
        w.commit()
    w.close()  # a closed writer: nothing more is written
    monkeypatch.delenv("MSEKIT_FAULT_WRITE_LIMIT")
    assert _read_all(path) == before
    assert not journal.journal_path(path).exists()
    with StoreWriter(path, {"k": 1}, _names()) as w:  # the rerun resumes
        assert w.existing_ids() == set(before)
        w.add(_one("s3", t=2000, v=2.0))
    assert set(_read_all(path)) == {"s0", "s1", "s2", "s3"}


def test_no_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    from msekit.store import DiskFullError

    path = tmp_path / "s.h5"
    with StoreWriter(path, {"k": 1}, _names()) as w:
        w.add(_one("s0"))
    size = path.stat().st_size
    monkeypatch.setenv("MSEKIT_FREE_MARGIN", str(10**18))
    with pytest.raises(DiskFullError, match="1 samples committed; free space and rerun"):
        with StoreWriter(path, {"k": 1}, _names()) as w:
            w.add(_one("s1"))
    assert path.stat().st_size == size and set(_read_all(path)) == {"s0"}


def test_readers_read_through_a_journal_and_writers_apply_it(tmp_path):
    """A writer killed mid-commit leaves a journal: readers see the last commit, the next
    writer puts the old pages back."""
    from msekit.journal import journal_path

    path = tmp_path / "s.h5"
    with StoreWriter(path, {"k": 1}, _names()) as w:
        w.add(_one("s0"))
    before = _read_all(path)
    w = StoreWriter(path, {"k": 1}, _names())
    w._write_rows([_one("s1", t=3000)])
    w.f.flush()  # uncommitted rows on disk; the journal holds the pages they overwrote
    assert journal_path(path).exists()
    assert _read_all(path) == before
    with pytest.raises(StoreError, match=f"{path} is being written by process {os.getpid()}"):
        StoreWriter(path, {"k": 1}, _names())
    w.f.journal.close()  # as if killed: no commit, no rollback, lock gone
    w.f.lock.release()
    assert _read_all(path) == before
    with StoreWriter(path, {"k": 1}, _names()) as w2:
        assert w2.existing_ids() == {"s0"}
    assert not journal_path(path).exists() and _read_all(path) == before


def test_newer_schema_and_missing_settings_are_one_line(tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    with StoreWriter(path, {"k": 1}, _names()) as w:
        w.add(_one("s0"))
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 7
    with pytest.raises(StoreError, match="schema version 7 is newer .*; upgrade msekit"):
        StoreReader(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        del f.attrs["settings"]
    with pytest.raises(StoreError, match=r"\['settings'\] are missing"):
        StoreReader(path)


def test_a_reader_open_during_many_commits_keeps_reading_the_right_rows(tmp_path):
    """The writer rewrites the last partial chunk at new places; a reader opened before keeps
    reading its committed samples right (it reopens the file when a commit happened)."""
    path = tmp_path / "s.h5"
    w = StoreWriter(path, {"k": 1}, _names())
    for k in range(3):
        w.add(_one(f"s{k}", t=30, v=float(k)))
        w.commit()
    r = StoreReader(path)
    first = {s.id: s.modalities["audio"].data.tobytes() for s in r}
    for k in range(3, 40):
        w.add(_one(f"s{k}", t=700, v=float(k)))
        w.commit()
        assert {s.id: s.modalities["audio"].data.tobytes() for s in r} == first
    w.close()
    assert len(r) == 3 and len(StoreReader(path)) == 40
    r.close()
