"""A reader that follows docs/store-schema.md alone (plain h5py, no msekit) gets what msekit reads."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np

import tests.extract.fakes  # noqa: F401  (registers fakeface / fakeaudio)
from msekit.extract import ExtractConfig, extract
from msekit.store import StoreReader
from msekit.views import align_store

ROOT = Path(__file__).resolve().parents[2]


def _store(tmp_path: Path) -> Path:
    clips = sorted((ROOT / "data" / "ravdess").glob("*.mp4"))[:4]
    d = tmp_path / "v"
    d.mkdir()
    rows = ["id,label,split,text"]
    for k, p in enumerate(clips):
        shutil.copy(p, d / p.name)
        rows.append(f"{p.stem},{k % 2},{'train' if k < 3 else 'test'},words number {k}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "s.h5"
    extract([d], out, ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, asr="none"),
            labels=tmp_path / "labels.csv", progress=False)
    align_store(out, "none")
    return out


def test_a_plain_h5py_reader_following_the_schema_page(tmp_path):
    out = _store(tmp_path)
    with h5py.File(out, "r", locking=False) as f:
        # root attributes
        assert int(f.attrs["schema_version"]) == 1
        settings = json.loads(f.attrs["settings"])
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
        assert f.attrs["settings_hash"] == digest.hexdigest()[:16]
        n = int(f.attrs["n_samples"])
        mods = json.loads(f.attrs["modalities"])
        ids = f["samples/id"].asstr()[:n].tolist()
        splits = f["samples/split"].asstr()[:n].tolist()
        raw, view = {}, {}
        for m in mods:
            names = json.loads(f[m].attrs["feature_names"])
            assert f[m]["data"].shape[1] == len(names)
            for i in range(n):  # "Reading sample i"
                off, ln = int(f[f"samples/{m}_offset"][i]), int(f[f"samples/{m}_length"][i])
                raw[m, i] = (f[m]["data"][off:off + ln], f[m]["times"][off:off + ln],
                             f[m]["mask"][off:off + ln])
                vo, vl = int(f[f"views/none/samples/{m}_offset"][i]), int(f[f"views/none/samples/{m}_length"][i])
                view[m, i] = (f[f"views/none/{m}/data"][vo:vo + vl], f[f"views/none/{m}/mask"][vo:vo + vl])
        toff, tlen = int(f["samples/token_offset"][0]), int(f["samples/token_length"][0])
        tokens0 = f["text/token_ids"][toff:toff + tlen]
        g = f["norm/none"]
        assert g.attrs["split"] == "train"
        assert g.attrs["split_hash"] == hashlib.sha256("\n".join(splits).encode()).hexdigest()[:16]
        assert f["views/none"].attrs["mode"] == "none" and int(f["views/none"].attrs["n_samples"]) == n
        norm = {m: (g[m]["mean"][:], g[m]["std"][:], int(g[m].attrs["frames"])) for m in mods}

    # what msekit's own reader returns
    with StoreReader(out) as r:
        assert r.ids == ids
        for i in range(n):
            smp = r.sample(i)
            assert smp.split == splits[i]
            for m in mods:
                np.testing.assert_array_equal(raw[m, i][0], smp.modalities[m].data)
                np.testing.assert_array_equal(raw[m, i][1], smp.modalities[m].times)
                np.testing.assert_array_equal(raw[m, i][2].astype(bool), smp.modalities[m].mask)
        np.testing.assert_array_equal(tokens0, r.sample(0).token_ids)
    assert len(tokens0) > 0
    for m in mods:
        # the 'none' view holds the raw frames; the statistics are over valid train rows
        rows = [view[m, i][0][view[m, i][1] == 1] for i in range(n) if splits[i] == "train"]
        x = np.concatenate(rows).astype(np.float64)
        std = x.std(0)
        std[std < 1e-6] = 1.0
        mean, sd, frames = norm[m]
        assert frames == len(x)
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sd, std, rtol=1e-5, atol=1e-6)
        for i in range(n):
            np.testing.assert_array_equal(view[m, i][0], raw[m, i][0])
