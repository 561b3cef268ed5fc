from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msekit.dataset import (
    StoreDataset,
    ViewConfig,
    collate,
    infer_task,
    make_loader,
    sorted_label_names,
)
from msekit.errors import MsekitError
from msekit.store import StoreReader
from msekit.views import align_store

from .conftest import make_store

KEYS = ["ids", "text", "audio", "audio_lengths", "video", "video_lengths", "labels"]


@pytest.mark.parametrize("packed", [False, True])
def test_batch_shapes_lengths_padding(tmp_path, packed):
    path = make_store(tmp_path / "s.h5", missing_every=4)
    if packed:
        align_store(path, "none")
    ds = StoreDataset(path, "train")
    assert ds.feature_dims == {"audio": 2, "video": 3}
    rows = [0, 1, 2, 3, 4]
    b = collate(ds.__getitems__(rows))
    assert sorted(b) == sorted(KEYS)
    with StoreReader(path) as r:
        for j, k in enumerate(rows):
            i = int(ds.rows[k])
            for m in ("audio", "video"):
                want = r.modality(i, m).data
                n = int(b[f"{m}_lengths"][j])
                assert n == len(want)
                np.testing.assert_array_equal(b[m][j, :n].numpy(), want)
                assert (b[m][j, n:] == 0).all()
    for m in ("audio", "video"):  # the padding checked above is not empty for every sample
        assert (b[f"{m}_lengths"] < b[m].shape[1]).any()
    assert b["audio"].shape == (5, max(1, int(b["audio_lengths"].max())), 2)
    assert b["audio_lengths"].dtype == torch.long and b["labels"].dtype == torch.float32
    assert 0 in b["audio_lengths"].tolist()  # a missing modality has length 0
    # the item path + generic collate gives the same batch
    b2 = collate([ds[k] for k in rows])
    for key in KEYS:
        if isinstance(b[key], torch.Tensor):
            torch.testing.assert_close(b[key], b2[key])
        else:
            assert b[key] == b2[key]
    item = ds[1]
    assert item["video_mask"].dtype == bool and len(item["video_mask"]) == len(item["video"])


def test_max_len_truncation_and_fixed_padding(store):
    ds = StoreDataset(store, "train", ViewConfig(max_len={"audio": 4, "video": 2}, pad_to="max_len"))
    b = collate(ds.__getitems__([0, 1, 2]))
    assert b["audio"].shape == (3, 4, 2) and b["video"].shape == (3, 2, 3)
    assert int(b["audio_lengths"].max()) <= 4
    auto = StoreDataset(store, "valid", ViewConfig(max_len="auto"))
    with StoreReader(store) as r:
        ln = r.lengths("audio")[r.column("split") == "train"]
    assert auto.max_len["audio"] == math.ceil(ln.mean() + 3 * ln.std())
    with pytest.raises(MsekitError, match="max_len"):
        ViewConfig(max_len=-1)
    with pytest.raises(MsekitError, match="align"):
        ViewConfig(align="words")


def test_task_inference_and_labels(tmp_path):
    assert infer_task(["1.5", "-0.3", ""]) == "regression"
    assert infer_task([str(i) for i in range(12)]) == "regression"
    assert infer_task(["0", "1", "2", "6"]) == "classification"
    assert infer_task(["joy", "1.0"]) == "classification"
    assert sorted_label_names(["10", "2", "0", ""]) == ["0", "2", "10"]
    path = make_store(tmp_path / "c.h5", labels="classification")
    ds = StoreDataset(path, "train")
    assert ds.task == "classification" and ds.label_names == ["anger", "joy", "neutral"]
    b = collate(ds.__getitems__([0, 1, 2]))
    assert b["labels"].dtype == torch.long and b["labels"].tolist() == [1, 0, 2]
    with pytest.raises(MsekitError, match="not in label_names"):
        StoreDataset(path, "train", ViewConfig(label_names=["joy"]))
    unl = make_store(tmp_path / "u.h5", labels="none")
    b = collate(StoreDataset(unl, "test").__getitems__([0, 1]))
    assert b["labels"] is None


def test_dataloader_two_workers_sees_every_sample_once(store):
    view = ViewConfig(align="word", normalize=True)
    align_store(store, "word")
    single = [b for b in make_loader(store, "train", 4, shuffle=True, num_workers=0, view=view, seed=3)]
    multi = [b for b in make_loader(store, "train", 4, shuffle=True, num_workers=2, view=view, seed=3)]
    ids = [i for b in multi for i in b["ids"]]
    assert sorted(ids) == sorted(StoreDataset(store, "train").ids) and len(set(ids)) == len(ids)
    assert [b["ids"] for b in single] == [b["ids"] for b in multi]
    for a, b in zip(single, multi, strict=True):
        torch.testing.assert_close(a["audio"], b["audio"])
        assert a["audio"].shape[1] == 3  # one row per word
