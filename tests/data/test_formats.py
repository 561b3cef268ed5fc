from __future__ import annotations

import csv
import datetime
import json
import os
import pickle

import h5py
import numpy as np
import pytest

from msekit.dataset import StoreDataset, ViewConfig
from msekit.errors import MsekitError
from msekit.formats import import_any
from msekit.formats.mmsa import export_mmsa, import_mmsa
from msekit.formats.safe_pickle import load_pickle
from msekit.store import StoreReader
from msekit.views import align_store


def mmsa_dict(seed=0, n=(6, 2, 2), ta=8, tv=5, da=4, dv=3):
    """An MMSA-layout dict (SIMS style: with _T/_A/_V labels and lengths), with -inf and NaN."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, k in zip(("train", "valid", "test"), n, strict=True):
        al, vl = rng.integers(1, ta + 1, k), rng.integers(1, tv + 1, k)
        audio = rng.normal(size=(k, ta, da)).astype(np.float32)
        vision = rng.normal(size=(k, tv, dv)).astype(np.float32)
        for i in range(k):  # zero padding past the lengths, as in the real files
            audio[i, al[i]:] = 0
            vision[i, vl[i]:] = 0
        audio[0, 0, 1] = -np.inf
        vision[0, 0, :] = np.nan  # a frame with no finite value
        out[split] = {
            "raw_text": np.array([f"{split} words {i}" for i in range(k)]),
            "audio": audio, "vision": vision,
            "text": rng.normal(size=(k, 50, 768)).astype(np.float32)[:, :2],
            "text_bert": np.zeros((k, 3, 2), np.float32),
            "audio_lengths": al, "vision_lengths": vl,
            "regression_labels": rng.uniform(-1, 1, k).astype(np.float32),
            "regression_labels_T": rng.uniform(-1, 1, k).astype(np.float32),
            "regression_labels_A": rng.uniform(-1, 1, k).astype(np.float32),
            "regression_labels_V": rng.uniform(-1, 1, k).astype(np.float32),
            "id": np.array([f"video_{split}{i // 2}$_${i}" for i in range(k)]),
        }
    return out


def test_mmsa_round_trip_and_cleaning(tmp_path):
    src = mmsa_dict()
    pkl = tmp_path / "unaligned_39.pkl"
    pkl.write_bytes(pickle.dumps(src, protocol=4))
    summary = import_mmsa(pkl, tmp_path / "s.h5")
    assert summary["samples"] == 10 and summary["cleaned_values"] == {"audio": 3, "video": 9}
    with StoreReader(tmp_path / "s.h5") as r:
        assert r.settings["source_format"] == "mmsa" and r.settings["file"] == "unaligned_39.pkl"
        assert r.feature_names("audio") == ["f0", "f1", "f2", "f3"]
        assert r.column("split").tolist().count("valid") == 2
        v = r.modality(0, "video")
        assert not v.mask[0] and np.isfinite(v.data).all()
        a = r.modality(0, "audio")
        assert a.data[0, 1] == 0 and a.mask[0]
        assert r.column("group")[0] == "video_train0"
    out = tmp_path / "back.pkl"
    export_mmsa(tmp_path / "s.h5", out)
    back = load_pickle(out)
    for split in ("train", "valid", "test"):
        s, b = src[split], back[split]
        want_a = np.nan_to_num(s["audio"], nan=0, neginf=0, posinf=0)
        want_v = np.nan_to_num(s["vision"], nan=0, neginf=0, posinf=0)
        np.testing.assert_array_equal(b["audio"], want_a)
        np.testing.assert_array_equal(b["vision"], want_v)
        for key in ("audio_lengths", "vision_lengths", "id", "raw_text", "regression_labels",
                    "regression_labels_T", "regression_labels_A", "regression_labels_V"):
            np.testing.assert_array_equal(b[key], s[key])
    # the imported store trains
    ds = StoreDataset(tmp_path / "s.h5", "train")
    assert ds.task == "regression" and ds.feature_dims == {"audio": 4, "video": 3}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "aligned_50.pkl"
    pkl.write_bytes(pickle.dumps({"train": {"id": np.array(["a"]), "x": _Evil(marker)}}))
    with pytest.raises(MsekitError, match=r"system.*--trust-pickle"):
        load_pickle(pkl)
    with pytest.raises(MsekitError, match="--trust-pickle"):
        import_any([pkl], tmp_path / "s.h5")
    assert not marker.exists()
    benign = tmp_path / "dates.pkl"
    benign.write_bytes(pickle.dumps([datetime.date(2020, 1, 1)]))
    with pytest.raises(MsekitError, match="datetime.date"):
        load_pickle(benign)
    assert load_pickle(benign, trust=True) == [datetime.date(2020, 1, 1)]
    # numpy arrays and scalars in containers are fine
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"a": np.arange(3), "b": np.float32(2.5), "c": [np.array(["x"])]}))
    got = load_pickle(ok)
    assert got["b"] == 2.5 and got["a"].tolist() == [0, 1, 2]


def test_item_lists_meld_style(tmp_path):
    rng = np.random.default_rng(0)
    names = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
    for split, k in (("train", 7), ("dev", 3), ("test", 2)):
        items = []
        for i in range(k):
            al, vl = int(rng.integers(1, 6)), int(rng.integers(1, 4))
            audio = np.zeros((6, 4), np.float32)
            audio[:al] = rng.normal(size=(al, 4))
            items.append({"features": {"audio": audio, "video": rng.normal(size=(4, 2)).astype(np.float32),
                                       "text": f"utt {split} {i}", "audio_len": al, "video_len": vl},
                          "label": names[i % 7]})
        (tmp_path / f"{split}.pkl").write_bytes(pickle.dumps(items))
    files = [tmp_path / f"{s}.pkl" for s in ("train", "dev", "test")]
    summary = import_any(files, tmp_path / "meld.h5")
    assert summary["format"] == "items" and summary["splits"] == {"train": 7, "valid": 3, "test": 2}
    with StoreReader(tmp_path / "meld.h5") as r:
        first = load_pickle(files[0])[0]["features"]
        np.testing.assert_array_equal(r.modality(0, "audio").data, first["audio"][: first["audio_len"]])
        assert len(r.modality(0, "video").data) == first["video_len"]
        assert r.sample(0).text == "utt train 0"
    ds = StoreDataset(tmp_path / "meld.h5", "train", ViewConfig(label_names=names))
    assert ds.task == "classification" and ds.label_names == names
    assert ds.labels[:3] == [0, 1, 2]
    assert StoreDataset(tmp_path / "meld.h5", "valid").label_names == sorted(names)


def _write_csd(path, root, data, metadata):
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        d = g.create_group("data")
        for vid, (feats, iv) in data.items():
            v = d.create_group(vid)
            v.create_dataset("features", data=feats)
            v.create_dataset("intervals", data=iv)
        m = g.create_group("metadata")
        for k, val in metadata.items():
            ds = m.create_dataset(k, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(val)


def test_csd_segments_words_and_names(tmp_path):
    t = np.arange(40) * 0.1
    vuv = np.zeros(40)
    vuv[3] = -np.inf
    cov = {"vidA": (np.c_[np.arange(40.0), vuv], np.c_[t, t + 0.1])}
    fac = {"vidA": (np.full((20, 3), 2.0), np.c_[np.arange(20) * 0.2, np.arange(1, 21) * 0.2])}
    fac["vidA"][0][5] = np.nan
    words = {"vidA": (np.array([[b"hello"], [b"sp"], [b"world"], [b"again"]]),
                      np.array([[0.0, 0.5], [0.5, 0.7], [0.7, 1.5], [2.2, 3.0]]))}
    labels = {"vidA": (np.array([[1.5, 0, 0, 0, 0, 0, 0], [-0.5, 0, 0, 0, 0, 0, 0]]),
                       np.array([[0.0, 1.5], [2.0, 4.0]]))}
    _write_csd(tmp_path / "COVAREP.csd", "COVAREP", cov, {"root name": "COVAREP",
                                                          "dimension names": ["F0", "VUV"]})
    _write_csd(tmp_path / "FACET.csd", "FACET 4.2", fac, {"root name": "FACET 4.2"})
    _write_csd(tmp_path / "words.csd", "words", words, {"root name": "words"})
    _write_csd(tmp_path / "lab.csd", "All Labels", labels, {"root name": "All Labels"})
    out = tmp_path / "csd.h5"
    summary = import_any([tmp_path / "COVAREP.csd", tmp_path / "FACET.csd", tmp_path / "words.csd",
                          f"labels={tmp_path / 'lab.csd'}"], out)
    assert summary["samples"] == 2 and summary["cleaned_values"] == {"audio": 1, "video": 3}
    with StoreReader(out) as r:
        assert r.ids == ["vidA[0]", "vidA[1]"]
        assert r.feature_names("audio") == ["F0", "VUV"] and r.feature_names("video") == ["f0", "f1", "f2"]
        s0, s1 = r.sample(0), r.sample(1)
        assert s0.words == ["hello", "world"] and s0.text == "hello world" and s0.label == "1.5"
        assert s1.words == ["again"] and s1.group == "vidA"
        assert len(s0.modalities["audio"].data) == 15 and len(s1.modalities["audio"].data) == 20
        assert not s0.modalities["video"].mask[5] and s0.modalities["video"].mask[4]
    summary = align_store(out, "word")
    assert summary["rows"] == {"audio": 3, "video": 3}


def test_csv_text_only_plain_and_meld(tmp_path):
    plain = tmp_path / "labels.csv"
    with open(plain, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "split"])
        for i in range(12):
            w.writerow([f"s{i}", f"text {i}", str(i % 7), ["train", "dev", "test"][i % 3]])
    import_any([plain], tmp_path / "t.h5")
    with StoreReader(tmp_path / "t.h5") as r:
        assert r.modalities == [] and "audio" not in r.f
    ds = StoreDataset(tmp_path / "t.h5", "train")
    assert ds.task == "classification" and ds.feature_dims == {}
    assert ds.label_names == [str(k) for k in range(7)]  # over the whole store, numeric order
    b = ds.collate(ds.__getitems__([0, 1]))
    assert b["audio"] is None and b["video"] is None and b["audio_lengths"].tolist() == [0, 0]
    meld = tmp_path / "dev_sent_emo.csv"
    with open(meld, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
        w.writerow([1, "Oh my God!", "Monica", "surprise", "positive", 0, 0])
        w.writerow([2, "Okay.", "Ross", "neutral", "neutral", 0, 1])
    summary = import_any([meld], tmp_path / "m.h5")
    assert summary["layouts"] == ["meld"]
    with StoreReader(tmp_path / "m.h5") as r:
        assert r.ids == ["valid/dia0_utt0", "valid/dia0_utt1"]
        assert r.column("group").tolist() == ["valid/dia0"] * 2
        assert r.column("label").tolist() == ["surprise", "neutral"]
    with pytest.raises(MsekitError, match="exists"):
        import_any([meld], tmp_path / "m.h5")


def test_csv_import_reads_a_windows_csv_like_extract_does(tmp_path):
    """One CSV reader: cp1252 text imports with a warning (it used to fail here only)."""
    from msekit.formats import import_any
    from msekit.store import StoreReader

    p = tmp_path / "labels.csv"
    p.write_bytes("id,text,label\r\na,café crème,pos\r\nb,naïve,neg\r\n".encode("cp1252"))
    got = import_any([p], tmp_path / "s.h5")
    assert got["samples"] == 2 and "not UTF-8" in got["warnings"][0]
    with StoreReader(tmp_path / "s.h5") as r:
        assert r.column("text").tolist() == ["café crème", "naïve"]


def test_csv_import_refuses_a_duplicate_id_naming_both_lines(tmp_path):
    from msekit.formats import import_any

    p = tmp_path / "t.csv"
    p.write_text("id,text\na,x\nb,y\na,z\n")
    with pytest.raises(MsekitError, match="'a' is on line 2 and line 4"):
        import_any([p], tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()
