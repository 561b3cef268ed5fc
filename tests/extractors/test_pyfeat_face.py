"""py-feat backend: the table conversion on a real Fex CSV; the detector only where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MsekitError
from msekit.extractors import create, names
from msekit.extractors.au_mapping import AU_NAMES
from msekit.extractors.pyfeat_face import PyFeatConfig, fex_to_modality, read_fex_csv

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CSV = FIX / "Feat_Test.csv"


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    return read_fex_csv(CSV)


def test_real_fex_csv(table):
    m = fex_to_modality(table, fps=30)
    assert m.data.shape == (1, 24) and m.mask.tolist() == [True]
    row = m.data[0]
    np.testing.assert_allclose(row[:20], [float(table[a][0]) for a in AU_NAMES], rtol=1e-6)
    np.testing.assert_allclose(row[20:23], [float(table[k][0]) for k in ("Pitch", "Yaw", "Roll")],
                               rtol=1e-6)
    assert row[23] == 1.0 and 0 <= row[:20].min() and row[:20].max() <= 1
    np.testing.assert_allclose(m.times, [[0.0, 1 / 30]])


def test_dataframe_input_matches_dict(table):
    pd = pytest.importorskip("pandas")
    a = fex_to_modality(pd.read_csv(CSV), fps=30)
    b = fex_to_modality(table, fps=30)
    np.testing.assert_array_equal(a.data, b.data)


def test_missing_faces_multi_faces_and_skips(table):
    one = {k: v[0] for k, v in table.items()}
    rows = [dict(one, frame="0", FaceScore="0.9"),
            dict(one, frame="0", FaceScore="0.99", AU12="0.1"),   # second face, more confident
            dict(one, frame="3", FaceScore="", AU01="nan"),       # no face in this frame
            dict(one, frame="6", FaceScore="0.2")]                # below threshold
    cols = {k: [r[k] for r in rows] for k in one}
    m = fex_to_modality(cols, fps=30, step=3)
    assert len(m.data) == 3 and m.mask.tolist() == [True, False, False]
    assert m.data[0, AU_NAMES.index("AU12")] == pytest.approx(0.1)
    assert np.all(m.data[1:] == 0) and np.all(np.isfinite(m.data))
    np.testing.assert_allclose(m.times, [[0, 0.1], [0.1, 0.2], [0.2, 0.3]])


def test_missing_columns(table):
    cols = dict(table)
    del cols["AU43"]
    with pytest.raises(MsekitError, match=r"lacks columns \['AU43'\]"):
        fex_to_modality(cols, fps=30)


def test_detector_missing_gives_install_hint():
    assert "pyfeat" in names("video")
    try:
        import feat  # noqa: F401
    except ImportError:
        with pytest.raises(MsekitError, match=r"pip install 'msekit\[pyfeat\]'.*Hugging Face hub"):
            create("video", "pyfeat", PyFeatConfig())
    else:
        pytest.skip("py-feat is installed")


def test_detector_on_real_video():
    pytest.importorskip("feat")
    from msekit.media import probe

    try:
        ex = create("video", "pyfeat", PyFeatConfig(fps=5))
    except MsekitError as e:  # installed but its hub weights are not cached
        pytest.skip(str(e))
    path = FIX / "single_face.mp4"
    m = ex.extract(path, probe(path))
    assert m.data.shape[1] == 24 and m.mask.mean() >= 0.9
