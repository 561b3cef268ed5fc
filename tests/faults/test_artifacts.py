"""Malformed imports, corrupt adapters, stores of another schema and hostile pickles: one line
naming the file and what to do; an existing store is never changed by a failed import."""

from __future__ import annotations

import os
import pickle
import shutil
import struct

import h5py
import numpy as np
import pytest

from msekit.adapter import AdapterConfig, MSEAdapter, save_adapter
from msekit.llm import DEFAULT_LLM
from tests.data.test_formats import _write_csd, mmsa_dict
from tests.faults.conftest import error_line, msekit, record, snapshot


@pytest.fixture
def good_store(tmp_path):
    """An imported store at ``out`` that a failed ``import --overwrite`` must leave as it is."""
    pkl = tmp_path / "good.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(mmsa_dict(), fh, protocol=4)
    out = tmp_path / "out.h5"
    assert msekit("import", pkl, "--out", out).returncode == 0
    return out


def _pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path


def _broken(kind: str):
    d = mmsa_dict()
    if kind == "wrong_n":
        d["valid"]["audio"] = np.concatenate([d["valid"]["audio"]] * 2)
        return d, "'audio' has shape (4, 8, 4), expected (N=2, T, D)"
    if kind == "two_d":
        d["train"]["vision"] = d["train"]["vision"][:, 0]
        return d, "'vision' has shape (6, 3), expected (N=6, T, D)"
    if kind == "other_dims":
        d["test"]["audio"] = d["test"]["audio"][:, :, :2]
        return d, "'audio' has 2 features per frame, other splits 4"
    if kind == "split_not_dict":
        d["train"] = [1, 2, 3]
        return d, "split 'train' is a list"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["wrong_n", "two_d", "other_dims", "split_not_dict"])
@pytest.mark.parametrize("trust", [False, True], ids=["safe", "trust_pickle"])
def test_malformed_mmsa_pickle_is_one_line_and_keeps_the_old_store(tmp_path, good_store, kind, trust):
    data, needle = _broken(kind)
    pkl = _pickle(tmp_path / "bad.pkl", data)
    before = snapshot(good_store)
    args = ["--trust-pickle"] if trust else []
    res = msekit("import", pkl, "--out", good_store, "--overwrite", "--format", "mmsa", *args)
    assert res.returncode == 1
    error_line(res, str(pkl), needle)
    assert snapshot(good_store) == before
    record(f"import MMSA {kind}{' --trust-pickle' if trust else ''} (--overwrite)", res,
           len(before), len(snapshot(good_store)))
    assert not any(p.name.endswith(".importing") for p in tmp_path.iterdir())


def test_trusted_pickle_of_another_type_is_one_line(tmp_path):
    pkl = _pickle(tmp_path / "numbers.pkl", np.arange(10))
    res = msekit("import", pkl, "--out", tmp_path / "x.h5", "--trust-pickle")
    assert res.returncode == 1
    error_line(res, str(pkl), "not an MMSA pickle")
    record("import --trust-pickle of an ndarray", res, 0, 0)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("kind, needle", [
    ("no_intervals", "needs 'features' and 'intervals'; found ['features']"),
    ("rows_differ", "'intervals' has shape (4, 2) and 'features' (5, 3)"),
])
def test_malformed_csd_is_one_line(tmp_path, good_store, kind, needle):
    feats = np.arange(15, dtype=np.float32).reshape(5, 3)
    iv = np.c_[np.arange(5), np.arange(5) + 1].astype(np.float64)
    csd = tmp_path / "COVAREP.csd"
    _write_csd(csd, "COVAREP", {"vid1": (feats, iv)}, {"dimension names": ["a", "b", "c"]})
    with h5py.File(csd, "a") as f:
        g = f["COVAREP/data/vid1"]
        if kind == "no_intervals":
            del g["intervals"]
        else:
            del g["intervals"]
            g["intervals"] = iv[:4]
    before = snapshot(good_store)
    res = msekit("import", f"audio={csd}", "--out", good_store, "--overwrite")
    assert res.returncode == 1
    error_line(res, str(csd), needle)
    assert snapshot(good_store) == before
    record(f"import .csd {kind} (--overwrite)", res, len(before), len(snapshot(good_store)))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    pkl = _pickle(tmp_path / "evil.pkl", {"train": Evil()})
    res = msekit("import", pkl, "--out", tmp_path / "x.h5")
    assert res.returncode == 1
    error_line(res, str(pkl), "refused to load", "--trust-pickle")
    record("import a malicious pickle", res, 0, 0)
    assert not marker.exists() and not (tmp_path / "x.h5").exists()


def test_pickle_asking_for_a_huge_allocation_is_one_line(tmp_path):
    pkl = tmp_path / "huge.pkl"  # BINBYTES8 of 2**62 bytes
    pkl.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"xx")
    res = msekit("import", pkl, "--out", tmp_path / "x.h5", "--format", "mmsa")
    assert res.returncode == 1
    error_line(res, str(pkl), "more memory")
    record("import a pickle asking for 2**62 bytes", res, 0, 0)


# --- stores of another schema -------------------------------------------------------------------

@pytest.mark.parametrize("damage, needle", [
    ("newer_schema", "schema version 99 is newer than this msekit understands (1); upgrade msekit"),
    ("no_settings", "store attributes ['settings'] are missing"),
])
def test_store_of_another_schema_is_one_line(tmp_path, reference, clips, damage, needle):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    before = snapshot(store)
    with h5py.File(store, "a") as f:
        saved = f.attrs["schema_version"], f.attrs["settings"]
        if damage == "newer_schema":
            f.attrs["schema_version"] = 99
        else:
            del f.attrs["settings"]
    for args in (["inspect", store], ["extract", clips, "--out", store, "--fps", "5", "-q"],
                 ["align", store, "--mode", "none"]):
        res = msekit(*args)
        assert res.returncode == 1
        error_line(res, str(store), needle)
        record(f"store {damage}: {args[0]}", res, len(before), len(before))
    with h5py.File(store, "a") as f:  # undo the damage: nothing else was changed
        f.attrs["schema_version"], f.attrs["settings"] = saved
    assert snapshot(store) == before


def test_a_file_that_is_not_a_store_is_one_line(tmp_path):
    bad = tmp_path / "s.h5"
    bad.write_bytes(os.urandom(4096))
    res = msekit("inspect", bad)
    assert res.returncode == 1
    error_line(res, str(bad), "not a readable HDF5 store")
    record("inspect random bytes as a store", res, 0, 0)


# --- adapters -----------------------------------------------------------------------------------

def _adapter(folder, hidden=576):
    cfg = AdapterConfig(llm_hidden_size=hidden, audio_dim=25, video_dim=24)
    save_adapter(folder, MSEAdapter(cfg), {"base_llm": DEFAULT_LLM, "task": "regression",
                                           "prompt": {}})
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated_weights", "hidden_size_mismatch", "bad_json"])
def test_corrupt_adapter_is_one_line(tmp_path, reference, damage):
    folder = _adapter(tmp_path / "adapter")
    weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        names, needle = (weights,), "truncated or damaged"
    elif damage == "hidden_size_mismatch":
        other = _adapter(tmp_path / "small", hidden=64)
        shutil.copy(other / "adapter_model.safetensors", weights)  # weights of a 64-wide LLM
        names, needle = (weights, "adapter_config.json"), "retrain"
    else:
        config.write_text(config.read_text()[:40])
        names, needle = (config,), "not valid JSON"
    before = snapshot(reference)
    res = msekit("evaluate", folder, reference, "--split", "all", "-q")
    assert res.returncode == 1
    error_line(res, *map(str, names), needle)
    assert snapshot(reference) == before
    record(f"adapter {damage}: evaluate", res, len(before), len(snapshot(reference)))
