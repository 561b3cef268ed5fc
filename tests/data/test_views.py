from __future__ import annotations

import h5py
import numpy as np
import pytest

from msekit.dataset import StoreDataset, ViewConfig
from msekit.errors import MsekitError
from msekit.store import Modality, Sample, StoreReader, StoreWriter
from msekit.views import (
    align_sample,
    align_store,
    clean,
    group_of,
    make_splits,
    overlap_weights,
    pool,
    rate_windows,
    split_store,
)

from .conftest import NAMES, make_store


def test_overlap_weights_are_seconds_of_overlap():
    frames = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    w = overlap_weights(frames, np.array([[0.5, 2.5], [2.9, 4.0], [5.0, 6.0]]))
    np.testing.assert_allclose(w, [[0.5, 1.0, 0.5], [0, 0, 0.1], [0, 0, 0]], atol=1e-12)
    # a frame of zero duration counts 1 in the window holding it
    np.testing.assert_allclose(overlap_weights(np.array([[1.0, 1.0]]), np.array([[0.5, 1.5]])), [[1.0]])


def test_word_pooling_weighted_by_overlap_with_empty_and_faceless_words():
    x = np.array([[0.0], [10.0], [40.0]], np.float32)
    times = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    words = np.array([[0.5, 2.5], [5.0, 6.0], [2.0, 3.0]])
    got = pool(Modality(x, times, np.ones(3, bool)), words)
    # (0.5*0 + 1*10 + 0.5*40) / 2 = 15, not the SDK's unweighted mean 50/3
    np.testing.assert_allclose(got.data[:, 0], [15.0, 0.0, 40.0])
    np.testing.assert_array_equal(got.mask, [True, False, True])
    # the third frame has no face: the last word holds no valid frame -> masked zeros
    got = pool(Modality(x, times, np.array([True, True, False])), words)
    np.testing.assert_allclose(got.data[:, 0], [10.0 / 1.5, 0.0, 0.0], rtol=1e-6)  # (0.5*0 + 1*10) / 1.5
    np.testing.assert_array_equal(got.mask, [True, False, False])
    assert np.isfinite(got.data).all()


def test_clean_replaces_nonfinite_and_masks_empty_frames():
    x = np.array([[1.0, -np.inf], [np.nan, np.nan], [2.0, 3.0]], np.float32)
    data, mask, bad = clean(x)
    np.testing.assert_array_equal(data, [[1, 0], [0, 0], [2, 3]])
    np.testing.assert_array_equal(mask, [True, False, True])
    assert bad == 3


def test_rate_alignment_averages_onto_a_common_grid():
    t = np.arange(25) * 0.04  # 25 fps video for 1 s
    vid = Modality(np.arange(25, dtype=np.float32)[:, None], np.c_[t, t + 0.04], np.ones(25, bool))
    aud = Modality(np.ones((100, 1), np.float32), np.c_[np.arange(100) * 0.01, np.arange(1, 101) * 0.01],
                   np.ones(100, bool))
    out = align_sample({"audio": aud, "video": vid}, "rate", duration=1.0, rate=10.0)
    assert len(out["audio"].data) == len(out["video"].data) == 10
    np.testing.assert_allclose(out["audio"].data[:, 0], 1.0)
    # window [0, 0.1): frames 0, 1 fully and half of frame 2 -> (0*0.04 + 1*0.04 + 2*0.02) / 0.1
    assert out["video"].data[0, 0] == pytest.approx(0.8, abs=1e-5)
    np.testing.assert_allclose(rate_windows(0.0, 0.25, 10.0)[-1], [0.2, 0.3])


def test_align_needs_frame_times():
    m = Modality(np.ones((3, 1)), np.zeros((3, 2)), np.ones(3, bool))
    with pytest.raises(MsekitError, match="no times"):
        align_sample({"audio": m}, "word", words=np.array([[0.0, 1.0]]))


@pytest.mark.parametrize("mode", ["none", "word", "rate"])
def test_align_store_writes_a_view_like_the_raw_layout(store, mode):
    summary = align_store(store, mode, rate=5.0)
    assert "norm" in summary
    with h5py.File(store, "r") as f:
        g = f[f"views/{mode}"]
        assert g.attrs["mode"] == mode and g.attrs["n_samples"] == 30
        assert f"views/.{mode}.tmp" not in f
        for m in NAMES:
            assert g[m]["data"].chunks is None  # contiguous, for pread
            off, ln = g["samples"][f"{m}_offset"][:], g["samples"][f"{m}_length"][:]
            assert off[-1] + ln[-1] == g[m]["data"].shape[0]
            assert np.isfinite(g[m]["data"][:]).all()
        assert f"norm/{mode}/audio/mean" in f
    with StoreReader(store) as r:
        s = r.sample(4)
        words = s.word_times
    want = align_sample(s.modalities, mode, words, 2.0, 5.0)
    with h5py.File(store, "r") as f:
        g = f[f"views/{mode}"]
        for m in NAMES:
            o, n = g["samples"][f"{m}_offset"][4], g["samples"][f"{m}_length"][4]
            np.testing.assert_allclose(g[m]["data"][o:o + n], want[m].data, rtol=1e-6)
            np.testing.assert_array_equal(g[m]["mask"][o:o + n].astype(bool), want[m].mask)
    if mode == "word":
        assert n == 3


def test_align_replaces_view_and_ignores_leftover_tmp(store):
    with h5py.File(store, "a") as f:  # an interrupted earlier run
        f.create_group("views/.word.tmp").create_dataset("junk", data=[1])
    align_store(store, "word")
    align_store(store, "word")
    with h5py.File(store, "r") as f:
        assert sorted(f["views"]) == ["word"]


def test_stale_view_is_refused(store):
    align_store(store, "word")
    with StoreWriter(store, {"test": 0}, NAMES) as w:
        w.add(Sample(id="late", text="x", label="0.5", split="train"))
    with pytest.raises(MsekitError, match="rerun"):
        StoreDataset(store, "train", ViewConfig(align="word"))
    with pytest.raises(MsekitError, match="no 'rate' view"):
        StoreDataset(store, "train", ViewConfig(align="rate"))


def test_group_of_reads_only_documented_format_ids():
    assert group_of("abc$_$3") == "abc"  # MMSA
    assert group_of("zX1[2]") == "zX1"  # CMU SDK
    # no guessing from other separators: such a clip is its own group
    assert group_of("vid/clip") == "vid/clip"
    assert group_of("ravdess_03-01-05-02-02-02-05") == "ravdess_03-01-05-02-02-02-05"


def test_make_splits_grouped_and_deterministic():
    ids = [f"v{i % 37}_{i}" for i in range(400)]
    groups = [f"v{i % 37}" for i in range(400)]
    a = make_splits(ids, groups, (0.8, 0.1, 0.1), seed=0)
    assert a == make_splits(ids, groups, (0.8, 0.1, 0.1), seed=0)
    assert a != make_splits(ids, groups, (0.8, 0.1, 0.1), seed=1)
    by_group: dict[str, set] = {}
    for g, s in zip(groups, a, strict=True):
        by_group.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in by_group.values())
    assert 0.7 < a.count("train") / 400 < 0.9 and a.count("valid") and a.count("test")
    groups = ["g1"] * 10 + ["g2"] * 10  # the group column wins over the id prefix
    b = make_splits([f"x_{i}" for i in range(20)], groups, (0.5, 0.5, 0), seed=3)
    assert len(set(b[:10])) == 1 and len(set(b[10:])) == 1 and "test" not in b


def test_split_store_writes_back_and_refreshes_norm(tmp_path):
    path = make_store(tmp_path / "s.h5", splits=False)
    align_store(path, "word")
    with pytest.raises(MsekitError, match="no samples in split 'train'"):
        StoreDataset(path, "train")
    counts = split_store(path, seed=0, ratios="0.6,0.2,0.2")
    assert counts["groups"] == 10 and counts["train"] + counts["valid"] + counts["test"] == 30
    with pytest.raises(MsekitError, match="--overwrite"):
        split_store(path, seed=1)
    with StoreReader(path) as r:
        splits, groups = r.column("split").tolist(), r.column("group").tolist()
    assert all(len({s for s, g in zip(splits, groups, strict=True) if g == gg}) == 1 for gg in groups)
    with h5py.File(path, "r") as f:
        assert "norm/word" in f and "norm/none" in f
    with StoreWriter(path, {"test": 0}, NAMES) as w:  # the rewritten column stays appendable
        w.add(Sample(id="new", split="train"))
    assert len(StoreReader(path)) == 31
    # on-the-fly splits without writing
    ds = StoreDataset(path, "valid", ViewConfig(split_seed=5))
    assert len(ds) > 0


def test_normalization_uses_train_only_and_keeps_padding_zero(tmp_path):
    path = tmp_path / "n.h5"
    rng = np.random.default_rng(1)
    with StoreWriter(path, {"n": 1}, {"audio": ["a0", "a1"]}) as w:
        for i in range(40):
            split = "train" if i < 30 else "test"
            t = int(rng.integers(5, 15))
            x = rng.normal([5.0, -2.0], [2.0, 0.5], size=(t, 2)) if split == "train" else np.full((t, 2), 100.0)
            mask = np.ones(t, bool)
            mask[0] = False
            x[0] = 0.0 if split == "train" else 100.0  # masked frames must not count
            if split == "train":
                x[0] = 0.0
            w.add(Sample(id=f"v{i}/c", label=str(float(i)), split=split, group=f"v{i}",
                         modalities={"audio": Modality(x, np.c_[np.arange(t), np.arange(t) + 1] * 0.1, mask)}))
    align_store(path, "none")
    ds = StoreDataset(path, "train", ViewConfig(normalize=True))
    mean, std = ds.norm["audio"]
    with StoreReader(path) as r:
        train = np.concatenate([r.modality(i, "audio").data[1:] for i in range(30)])
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-4)
    np.testing.assert_allclose(std, train.std(0), rtol=1e-4)
    b = ds.collate(ds.__getitems__(list(range(len(ds)))))
    x, lens = b["audio"], b["audio_lengths"]
    valid = (np.arange(x.shape[1])[None] < lens.numpy()[:, None])
    valid[:, 0] = False
    np.testing.assert_allclose(x.numpy()[valid].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.numpy()[valid].std(0), 1.0, atol=1e-3)
    assert (x.numpy()[~valid] == 0).all()  # padding and masked frames stay zero
    # test samples are normalized with the train statistics
    t = StoreDataset(path, "test", ViewConfig(normalize=True))
    item = t[0]
    np.testing.assert_allclose(item["audio"][1], (100.0 - mean) / std, rtol=1e-5)
