"""The blendshape -> AU mapping: table, shapes, ranges and the documented rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.extractors.au_mapping import (
    AU_NAMES,
    BLENDSHAPE_NAMES,
    LINEAR_MAPPING,
    blendshapes_to_aus,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "au-mapping.md"


def _one(**scores: float) -> np.ndarray:
    b = np.zeros((1, len(BLENDSHAPE_NAMES)), np.float32)
    for name, v in scores.items():
        b[0, BLENDSHAPE_NAMES.index(name)] = v
    return blendshapes_to_aus(b)[0]


def au(values: np.ndarray, name: str) -> float:
    return float(values[AU_NAMES.index(name)])


def test_names():
    assert len(AU_NAMES) == 20 and len(BLENDSHAPE_NAMES) == 52
    assert AU_NAMES[0] == "AU01" and AU_NAMES[-1] == "AU43"
    assert set(LINEAR_MAPPING) == set(AU_NAMES) - {"AU25"}
    for weights in LINEAR_MAPPING.values():
        assert set(weights) <= set(BLENDSHAPE_NAMES)
        assert sum(weights.values()) == pytest.approx(1.0)  # a convex combination stays in [0, 1]


@pytest.mark.parametrize("scores, target, value", [
    ({"mouthSmileLeft": 1.0, "mouthSmileRight": 0.5}, "AU12", 0.75),
    ({"browInnerUp": 0.3}, "AU01", 0.3),
    ({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, "AU43", 1.0),
    ({"jawOpen": 0.6}, "AU26", 0.6),
    ({"jawOpen": 0.6, "mouthClose": 0.2}, "AU25", 0.4),
    ({"mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5}, "AU25", 0.5),
    ({"mouthRollLower": 0.4, "mouthRollUpper": 0.2}, "AU28", 0.3),
    ({"mouthPressLeft": 0.8, "mouthPressRight": 0.8}, "AU24", 0.8),
    ({"mouthPressLeft": 0.8, "mouthPressRight": 0.8}, "AU23", 0.4),
    ({"noseSneerLeft": 0.4, "noseSneerRight": 0.4}, "AU11", 0.2),
    ({"mouthShrugLower": 0.7}, "AU17", 0.7),
])
def test_rows(scores, target, value):
    assert au(_one(**scores), target) == pytest.approx(value, abs=1e-6)


def test_vectorized_range_and_dtype():
    rng = np.random.default_rng(0)
    b = rng.uniform(-0.2, 1.2, size=(500, 52))  # out-of-range inputs are clipped
    out = blendshapes_to_aus(b)
    assert out.shape == (500, 20) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.all(np.isfinite(blendshapes_to_aus(np.full((2, 52), np.nan))))
    assert blendshapes_to_aus(np.zeros((0, 52))).shape == (0, 20)


def test_bad_shape():
    with pytest.raises(MsekitError, match=r"\(N, 52\)"):
        blendshapes_to_aus(np.zeros((3, 51)))


def test_doc_table_lists_every_au():
    text = DOC.read_text()
    for name in AU_NAMES:
        assert f"| {name} " in text
    assert "not calibrated" in text
