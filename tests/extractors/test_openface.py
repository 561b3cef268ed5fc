"""OpenFace-CSV backend on a real OpenFace 2.x output (tests/fixtures/OpenFace_Test.csv)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MediaError
from msekit.extractors import create, names
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.base import face_feature_names
from msekit.extractors.openface import (
    GAZE_NAMES,
    OpenFaceConfig,
    openface_to_modality,
    read_openface_csv,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CSV = FIX / "OpenFace_Test.csv"


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    return read_openface_csv(CSV)


def test_read_strips_names(columns):
    assert {"frame", "timestamp", "confidence", "success", "pose_Rx", "AU01_r", "AU28_c"} <= set(columns)
    assert len(columns["timestamp"]) == 100


def test_conversion(columns):
    m = openface_to_modality(columns)
    assert m.data.shape == (100, 24) and m.mask.all()
    aus = m.data[:, :20]
    assert aus.min() >= 0 and aus.max() <= 1
    i = AU_NAMES.index
    np.testing.assert_allclose(aus[:, i("AU01")], columns["AU01_r"] / 5, rtol=1e-6)
    np.testing.assert_allclose(aus[:, i("AU26")], columns["AU26_r"] / 5, rtol=1e-6)
    np.testing.assert_allclose(aus[:, i("AU43")], columns["AU45_r"] / 5, rtol=1e-6)
    np.testing.assert_array_equal(aus[:, i("AU28")], columns["AU28_c"])
    assert np.all(aus[:, [i("AU11"), i("AU24")]] == 0)
    np.testing.assert_allclose(m.data[:, 20], np.degrees(columns["pose_Rx"]), rtol=1e-5)  # pitch
    np.testing.assert_allclose(m.data[:, 21], np.degrees(columns["pose_Ry"]), rtol=1e-5)  # yaw
    np.testing.assert_allclose(m.data[:, 22], np.degrees(columns["pose_Rz"]), rtol=1e-5)  # roll
    assert np.all(m.data[:, 23] == 1)
    np.testing.assert_allclose(m.times[:, 0], columns["timestamp"])
    assert np.all(m.times[:, 1] > m.times[:, 0])


def test_low_confidence_and_failed_frames_masked(columns):
    cols = {k: v.copy() for k, v in columns.items()}
    cols["success"][:3] = 0
    cols["confidence"][10] = 0.2
    cols["AU01_r"][20] = np.nan
    m = openface_to_modality(cols, min_confidence=0.5)
    assert not m.mask[[0, 1, 2, 10]].any() and m.mask.sum() == 96
    assert np.all(m.data[[0, 1, 2, 10]] == 0) and np.all(np.isfinite(m.data))


def test_gaze_extras(columns):
    m = openface_to_modality(columns, gaze=True)
    assert m.data.shape == (100, 24 + len(GAZE_NAMES))
    np.testing.assert_allclose(m.data[:, 24], columns["gaze_0_x"], rtol=1e-6)
    g = (np.stack([columns[f"gaze_0_{a}"] for a in "xyz"], 1)
         + np.stack([columns[f"gaze_1_{a}"] for a in "xyz"], 1)) / 2
    np.testing.assert_allclose(m.data[:, 30], np.arctan2(g[:, 0], -g[:, 2]), rtol=1e-5, atol=1e-6)


def test_multi_face_keeps_most_confident(columns):
    cols = {k: np.r_[v, v] for k, v in columns.items()}
    cols["face_id"] = np.r_[np.zeros(100), np.ones(100)]
    cols["confidence"] = np.r_[np.full(100, 0.6), np.full(100, 0.9)]
    cols["AU01_r"] = np.r_[np.zeros(100), np.full(100, 5.0)]
    m = openface_to_modality(cols)
    assert len(m.data) == 100 and np.all(m.data[:, 0] == 1.0)


def test_backend_finds_csv(tmp_path):
    assert "openface" in names("video")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # the backend never decodes the video
    ex = create("video", "openface", OpenFaceConfig(csv_dir=str(FIX), gaze=True))
    with pytest.raises(MediaError, match=r"clip\.mp4: no OpenFace CSV.*FeatureExtraction"):
        ex.extract(video)
    shutil.copy(CSV, tmp_path / "clip.csv")  # beside the video
    m = ex.extract(video)
    assert ex.feature_names == face_feature_names() + list(GAZE_NAMES)
    assert m.data.shape == (100, len(ex.feature_names))


def test_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("frame, timestamp\n1, 0.0\n")
    with pytest.raises(MediaError, match=r"bad\.csv.*lacks columns"):
        read_openface_csv(bad)


def test_csv_dir_from_the_command_line(tmp_path):
    """``--face-option csv_dir=DIR`` reaches the backend through the installed executable."""
    import os
    import subprocess
    import sys

    from msekit.store import StoreReader

    csvs = tmp_path / "feats"
    csvs.mkdir()
    shutil.copy(CSV, csvs / "single_face.csv")
    exe = Path(sys.executable).parent / "msekit"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", PYTHONPATH=str(root))
    args = [str(exe), "extract", str(FIX / "single_face.mp4"), "--out", str(tmp_path / "s.h5"),
            "--face", "openface", "--llm", "none", "--quiet"]
    res = subprocess.run([*args, "--face-option", f"csv_dir={csvs}", "--face-option", "gaze=true"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with StoreReader(tmp_path / "s.h5") as r:
        assert r.settings["video"]["config"]["csv_dir"] == str(csvs)
        assert r.feature_names("video") == face_feature_names() + list(GAZE_NAMES)
        assert len(r.modality(0, "video").data) == 100  # the CSV's frames
    res = subprocess.run([*args, "--face-option", "csvdir=x"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
    assert "allowed: csv_dir, min_confidence, gaze" in res.stderr
