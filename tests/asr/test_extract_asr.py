"""The text stage inside `msekit extract`: ASR text, word times for given text, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msekit import asr
from msekit.extract import ExtractConfig, extract
from msekit.store import StoreReader
from msekit.wer import word_error_rate
from tests.asr.conftest import LIBRIVOX, librivox, make_clip

EXE = Path(sys.executable).parent / "msekit"
if not EXE.exists():  # pragma: no cover - an install without console scripts
    EXE = Path(shutil.which("msekit") or "msekit")
NO_FACE = ["--face", "", "--llm", "none", "-q"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture()
def clips(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    for r in librivox()[:3]:
        shutil.copy(r["path"], d)
    return d


def test_extract_without_transcripts_gives_text_and_word_times(clips, tmp_path):
    out = tmp_path / "s.h5"
    res = run("extract", str(clips), "-o", str(out), "--language", "en", "--workers", "2",
              "--align", "word", *NO_FACE)
    assert res.returncode == 0, res.stderr
    refs = {r["id"]: r["text"] for r in librivox()}
    with StoreReader(out) as r:
        assert r.settings["text"]["model"] == "base" and r.settings["text"]["mode"] == "auto"
        samples = list(r)
        assert "word" in r.f["views"]
    hyps = [s.text for s in samples]
    assert word_error_rate([refs[s.id] for s in samples], hyps) <= 0.1, hyps
    for s in samples:
        assert s.text_source == "asr" and s.asr_model == "base" and s.language == "en"
        assert len(s.words) == len(s.word_times) == len(s.probs()) > 3
        assert np.all(np.isfinite(s.probs())) and s.asr_logprob < 0 <= s.asr_no_speech <= 1
        assert s.word_times[-1, 1] <= s.duration + 0.1
    res = run("inspect", str(out))
    assert res.returncode == 0 and "source: asr 3; ASR base, 0 empty" in res.stdout, res.stdout
    res = run("inspect", str(out), "--sample", samples[0].id, "--json", "--plot",
              str(tmp_path / "p.png"))
    info = json.loads(res.stdout)
    assert info["text_source"] == "asr" and info["asr"]["avg_logprob"] < 0
    assert 0 < info["asr"]["mean_word_prob"] <= 1 and (tmp_path / "p.png").stat().st_size > 0


def test_doctor_checks_the_asr_models():
    from msekit.doctor import run_checks

    checks = {c.name: c for c in run_checks()}
    assert checks["ASR model base"].ok and "sha256 ok" in checks["ASR model base"].detail
    assert checks["ASR model tiny.en"].ok and checks["faster-whisper (ASR)"].ok


def test_given_text_wins_and_gets_word_times(clips, tmp_path):
    rows = librivox()[:3]
    trans = tmp_path / "t.csv"
    # Only two of the three clips have a transcript; neither has word times.
    trans.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows[:2]))
    out = tmp_path / "s.h5"
    s = extract([clips], out, ExtractConfig(face="", llm="none", language="en"),
                transcripts=trans, progress=False)
    assert s.ok and not any("no transcript" in w for w in s.warnings), s.warnings
    with StoreReader(out) as r:
        given = [r.sample(x["id"]) for x in rows[:2]]
        other = r.sample(rows[2]["id"])
    for smp, row in zip(given, rows, strict=False):
        assert smp.text == row["text"] and smp.text_source == "given" and smp.asr_model == ""
        assert smp.words == asr.normalize_words(row["text"])
        assert np.all(np.diff(smp.word_times[:, 0]) > 0)
        assert 0 <= smp.word_times[0, 0] and smp.word_times[-1, 1] <= smp.duration + 0.05
        assert np.all(np.isnan(smp.probs()))  # aligned, not recognised
    assert other.text_source == "asr" and other.text


def test_asr_always_keeps_given_text_and_times_it_from_asr_words(clips, tmp_path):
    row = librivox()[0]
    trans = tmp_path / "t.csv"
    trans.write_text(f"id,text\n{row['id']},{row['text']}\n")
    out = tmp_path / "s.h5"
    extract([clips / f"{row['id']}.mp4"], out,
            ExtractConfig(face="", llm="none", language="en", asr="always"),
            transcripts=trans, progress=False)
    with StoreReader(out) as r:
        smp = r.sample(0)
    assert smp.text == row["text"] and smp.text_source == "given"
    assert smp.asr_model == "base" and np.isfinite(smp.asr_logprob)
    assert smp.words == asr.normalize_words(row["text"])


def test_asr_none_leaves_untranscribed_samples_empty(clips, tmp_path):
    out = tmp_path / "s.h5"
    extract([clips], out, ExtractConfig(face="", llm="none", asr="none"), progress=False)
    with StoreReader(out) as r:
        assert all(s.text == "" and s.text_source == "" and not s.words for s in r)


def test_silence_gives_an_empty_transcript_and_a_warning(tmp_path):
    clip = make_clip(tmp_path / "quiet.mp4", "anullsrc=r=16000:cl=mono:d={d}", 3.0)
    out = tmp_path / "s.h5"
    s = extract([clip], out, ExtractConfig(face="", llm="none", language="en"), progress=False)
    assert s.ok and s.done == 1
    assert any("no speech found" in w for w in s.warnings), s.warnings
    with StoreReader(out) as r:
        smp = r.sample(0)
    assert smp.text == "" and smp.text_source == "asr" and smp.words == []


def test_zh_with_tiny_en_fails_before_any_work(tmp_path):
    out = tmp_path / "s.h5"
    res = run("extract", str(LIBRIVOX), "-o", str(out), "--asr-model", "tiny.en",
              "--language", "zh", *NO_FACE)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "English-only" in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_asr_settings_guard_resume(clips, tmp_path):
    out = tmp_path / "s.h5"
    cfg = ExtractConfig(face="", llm="none", language="en", asr_model="tiny.en")
    one = clips / f"{librivox()[0]['id']}.mp4"
    assert extract([one], out, cfg, progress=False).done == 1
    assert extract([one], out, cfg, progress=False).skipped == 1
    res = run("extract", str(one), "-o", str(out), "--language", "en", *NO_FACE)
    assert res.returncode == 1 and "other settings" in res.stderr


def test_one_and_two_workers_give_the_same_text(clips, tmp_path):
    cfg = ExtractConfig(face="", llm="none", language="en", asr_model="tiny.en")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract([clips], a, cfg, progress=False)
    extract([clips], b, cfg, workers=2, progress=False)
    with StoreReader(a) as ra, StoreReader(b) as rb:
        assert ra.ids == rb.ids
        for x, y in zip(ra, rb, strict=True):
            assert (x.text, x.words, x.text_source) == (y.text, y.words, y.text_source)
            # Workers run CTranslate2 on one thread each, the single process on all cores, and
            # its int8 kernels round differently with the thread count: on some CPUs a word edge
            # moves by one 20 ms timestamp step (4.12 against 4.10 s) and a word's probability
            # by up to 0.023. The words themselves must not change.
            np.testing.assert_allclose(x.word_times, y.word_times, rtol=0, atol=0.02 + 1e-6)
            np.testing.assert_allclose(x.probs(), y.probs(), rtol=0, atol=0.05)


def test_predict_extraction_transcribes_videos_without_a_transcript(tmp_path):
    """`msekit predict RUN clip.mp4` extracts with the store's recorded settings, ASR included
    (a store extracted with --asr none still transcribes the new video)."""
    from msekit.predict import Run, extract_videos

    row = librivox()[1]
    settings = {"extract": {"face": "", "llm": "none", "asr": "none", "asr_model": "tiny.en",
                            "language": "en"}}
    run_ = Run(model=None, meta={"store_settings": settings}, path=tmp_path)
    out = tmp_path / "f.h5"
    assert extract_videos(run_, [row["path"]], out) == []  # no failures
    with StoreReader(out) as r:
        smp = r.sample(0)
        assert r.settings["text"]["model"] == "tiny.en"
    assert smp.text_source == "asr" and smp.asr_model == "tiny.en"
    assert word_error_rate([row["text"]], [smp.text]) <= 0.4


def test_shards_merge_to_the_single_run(clips, tmp_path):
    from msekit.store import merge_stores

    cfg = ExtractConfig(face="", llm="none", language="en", asr_model="tiny.en")
    extract([clips], tmp_path / "all.h5", cfg, progress=False)
    for k in (1, 2):
        extract([clips], tmp_path / f"s{k}.h5", cfg, shard=f"{k}/2", progress=False)
    merge_stores([tmp_path / "s1.h5", tmp_path / "s2.h5"], tmp_path / "m.h5")
    with StoreReader(tmp_path / "all.h5") as ra, StoreReader(tmp_path / "m.h5") as rb:
        assert ra.ids == rb.ids and ra.settings_hash == rb.settings_hash
        for x, y in zip(ra, rb, strict=True):
            assert (x.text, x.words, x.asr_logprob) == (y.text, y.words, y.asr_logprob)
            np.testing.assert_array_equal(x.word_times, y.word_times)
