"""openSMILE backend on real speech (tests/fixtures/speech.wav, 16 kHz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.extractors import create, names
from msekit.extractors.opensmile_audio import OpenSmileAudio, OpenSmileConfig
from msekit.media import load_audio

FIX = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(FIX / "speech.wav")


@pytest.mark.parametrize("feature_set, level, dim", [
    ("eGeMAPSv02", "lld", 25), ("eGeMAPSv02", "functionals", 88), ("ComParE_2016", "lld", 65),
])
def test_shapes(speech, feature_set, level, dim):
    ex = OpenSmileAudio(OpenSmileConfig(feature_set, level))
    m = ex.extract(speech, 16000)
    assert m.data.shape[1] == dim == len(ex.feature_names)
    duration = len(speech) / 16000
    if level == "functionals":
        assert m.data.shape[0] == 1
        np.testing.assert_allclose(m.times[0], [0.0, duration], atol=0.01)
    else:
        # 10 ms frames up to the signal's end (msekit pads the last windows).
        assert abs(m.data.shape[0] - duration / 0.01) <= 2
        np.testing.assert_allclose(np.diff(m.times[:, 0]), 0.01, atol=1e-6)
        assert np.all(m.times[:, 1] > m.times[:, 0])
    assert np.all(np.isfinite(m.data)) and m.mask.all()
    assert m.data.std() > 0 and np.abs(m.data).max() > 0


def test_registry_and_frame_shift():
    assert "opensmile" in names("audio")
    ex = create("audio", "opensmile")
    assert ex.frame_shift == 0.01 and ex.feature_names[0] == "Loudness_sma3"


def test_non_finite_frames_are_masked(monkeypatch, speech):
    ex = OpenSmileAudio(OpenSmileConfig())
    real = ex._smile.process_signal

    def with_inf(signal, sr):
        table = real(signal, sr)
        table.iloc[3, 0] = -np.inf
        table.iloc[5, 2] = np.nan
        return table

    monkeypatch.setattr(ex._smile, "process_signal", with_inf)
    m = ex.extract(speech[:16000], 16000)
    assert not m.mask[3] and not m.mask[5] and m.mask.sum() == len(m.mask) - 2
    assert np.all(m.data[[3, 5]] == 0) and np.all(np.isfinite(m.data))


def test_empty_and_bad_input():
    ex = OpenSmileAudio(OpenSmileConfig())
    assert ex.extract(np.zeros(0, np.float32), 16000).data.shape == (0, 25)
    with pytest.raises(MsekitError, match="mono"):
        ex.extract(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(MsekitError, match="feature_set must be one of"):
        OpenSmileConfig(feature_set="GeMAPS")
    with pytest.raises(MsekitError, match="level must be one of"):
        OpenSmileConfig(level="lld_de")
