"""Extraction orchestration on real media: failures, resume, settings, shards, kill -9.

Most tests use the fast fake face/audio backends of ``fakes`` (real decoding, trivial features);
test_real.py runs the real mediapipe + openSMILE backends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tests.extract.fakes  # noqa: F401  (registers fakeface / fakeaudio)
from msekit.errors import StoreError
from msekit.extract import ExtractConfig, extract
from msekit.store import StoreReader, merge_stores

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
RAV = ROOT / "data" / "ravdess"
FAKE = ExtractConfig(face="fakeface", audio="fakeaudio", fps=10, llm="none")


def assert_same_store(a: Path, b: Path, *, same_order: bool = True) -> None:
    """Same ids (and order), fields and identical arrays per id."""
    with StoreReader(a) as ra, StoreReader(b) as rb:
        assert (ra.ids if same_order else sorted(ra.ids)) == (rb.ids if same_order else sorted(rb.ids))
        assert ra.settings_hash == rb.settings_hash
        for sid in ra.ids:
            x, y = ra.sample(sid), rb.sample(sid)
            for f in ("text", "label", "split", "group", "source", "duration", "words"):
                assert getattr(x, f) == getattr(y, f), (sid, f)
            np.testing.assert_array_equal(x.token_ids, y.token_ids)
            for m in ra.modalities:
                for f in ("data", "times", "mask"):
                    np.testing.assert_array_equal(getattr(x.modalities[m], f),
                                                  getattr(y.modalities[m], f), err_msg=f"{sid} {m}")


@pytest.fixture()
def clips(tmp_path):
    """Four short clips with awkward names, plus labels and transcripts for them."""
    d = tmp_path / "clips"
    d.mkdir()
    names = sorted(RAV.glob("*.mp4"))[:3]
    for p in names:
        shutil.copy(p, d / p.name)
    shutil.copy(FIX / "single_face.mp4", d / "odd name, é.mp4")
    return d


def test_bad_inputs_are_recorded_and_the_rest_goes_on(tmp_path):
    bad = tmp_path / "in"
    (bad / "sub").mkdir(parents=True)
    for name in ("corrupt.mp4", "empty.mp4", "truncated.mp4", "silent_video_noaudio.mp4",
                 "single_face.mp4"):
        shutil.copy(FIX / name, bad / name)
    shutil.copy(FIX / "single_face.mp4", bad / "sub" / "single_face.mkv")  # duplicate id
    shutil.copy(FIX / "single_face.mp4", bad / "sub" / "clip 2.mp4")
    (tmp_path / "notes.txt").write_text("not a video")
    trans = tmp_path / "t.csv"
    trans.write_bytes("id,text\nclip 2,d\u00e9j\u00e0 vu\nghost,no video\n".encode("cp1252"))
    out = tmp_path / "s.h5"
    s = extract([bad, tmp_path / "notes.txt"], out, FAKE, transcripts=trans, progress=False)
    stages = {(f["id"], f["stage"]) for f in s.failures}
    assert stages == {("corrupt", "probe"), ("empty", "probe"), ("truncated", "video"),
                      ("single_face", "input"), ("notes", "input")}
    reasons = {f["id"]: f["reason"] for f in s.failures}
    assert "empty" in reasons["empty"] and "unsupported extension '.txt'" in reasons["notes"]
    assert "duplicate sample id 'single_face'" in reasons["single_face"]
    assert s.done == 2 and s.failed == 6 and not s.ok and s.no_audio == 1 and s.orphan_ids == 1
    assert any("not UTF-8" in w for w in s.warnings)
    with StoreReader(out) as r:
        assert r.ids == ["clip 2", "silent_video_noaudio"]
        assert r.sample("clip 2").text == "d\u00e9j\u00e0 vu"
        assert r.lengths("audio").tolist()[1] == 0 and r.lengths("video").tolist()[1] > 0
        assert {f["id"] for f in r.failures()} == {"corrupt", "empty", "truncated", "single_face",
                                                   "notes"}
    # --strict stops at the first failure (here: an input-level one, before any decoding).
    s2 = extract([bad], tmp_path / "strict.h5", FAKE, strict=True, progress=False)
    assert s2.stopped and s2.done == 0 and s2.failed >= 1


def test_frame_counts_resume_and_settings_guard(clips, tmp_path):
    from msekit import media

    out = tmp_path / "s.h5"
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label,split\n" + "".join(
        f'"{p.stem}",{i},train\n' for i, p in enumerate(sorted(clips.glob("*.mp4")))))
    s1 = extract([clips], out, FAKE, labels=labels, progress=False)
    assert s1.ok and s1.done == 4 and s1.skipped == 0 and s1.media_seconds > 10
    with StoreReader(out) as r:
        for sid in r.ids:
            x = r.sample(sid)
            info = media.probe(x.source)
            decoded = sum(len(t) for _, t in media.iter_frames(x.source, info, fps=10))
            assert abs(len(x.modalities["video"].data) - decoded) <= 1
            assert abs(len(x.modalities["video"].data) - info.duration * 10) <= 1
            # 10 ms rows over the audio stream, which may end a little before the video
            audio_s = len(media.load_audio(x.source)) / 16000
            assert abs(len(x.modalities["audio"].data) - audio_s / 0.01) <= 2
            assert info.duration - audio_s < 0.1
        assert r.sample("odd name, é").label == "0"  # first in sorted order
    assert out.with_name("s.h5.config.json").is_file()
    s2 = extract([clips], out, FAKE, labels=labels, progress=False)
    assert s2.done == 0 and s2.skipped == 4
    other = ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, llm="none")
    with pytest.raises(StoreError, match="other settings"):
        extract([clips], out, other, progress=False)
    s3 = extract([clips], out, other, overwrite=True, progress=False)
    assert s3.done == 4


def test_shards_merge_to_the_single_run_store(clips, tmp_path):
    single = tmp_path / "single.h5"
    extract([clips], single, FAKE, workers=2, progress=False)
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}.h5"
        s = extract([clips], part, FAKE, shard=f"{k}/3", progress=False)
        assert s.total in (1, 2)
        parts.append(part)
    merged = tmp_path / "merged.h5"
    assert merge_stores(parts, merged) == 4
    assert_same_store(single, merged)
    with pytest.raises(StoreError, match="in both"):
        merge_stores([parts[0], parts[0], parts[1]], tmp_path / "dup.h5")
    other = tmp_path / "other.h5"
    extract([clips], other, ExtractConfig(face="fakeface", audio="fakeaudio", llm="none",
                                          fps=5), shard="1/3", progress=False)
    with pytest.raises(StoreError, match="other settings"):
        merge_stores([parts[1], other], tmp_path / "mixed.h5")


def _n_committed(path: Path) -> int:
    """Samples of the last commit, as any reader sees them (through a commit's undo journal:
    the raw file may already hold a commit in progress)."""
    from msekit.errors import StoreError

    try:
        with StoreReader(path) as r:
            return len(r)
    except (StoreError, OSError, KeyError):
        return 0


def test_kill_9_midway_then_rerun_equals_an_uninterrupted_run(clips, tmp_path):
    out = tmp_path / "killed.h5"
    cli = ("import sys, tests.extract.fakes; from msekit.cli import main; "
           "sys.argv = ['msekit'] + sys.argv[1:]; main()")
    args = [sys.executable, "-c", cli, "extract", str(clips), "--out", str(out), "--face",
            "fakeface", "--fps", "10", "--llm", "none", "--quiet"]
    env = {**os.environ, "MSEKIT_FAKE_SLOW": "0.7", "PYTHONPATH": str(ROOT),
           "HDF5_USE_FILE_LOCKING": "FALSE"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _n_committed(out) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _n_committed(out)
    assert 1 <= killed_at < 4
    with StoreReader(out) as r:  # readable, with every committed sample intact
        assert len(r) == killed_at
    rerun = subprocess.run(args, cwd=ROOT, env={**env, "MSEKIT_FAKE_SLOW": "0"},
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    full = tmp_path / "full.h5"
    cfg = ExtractConfig(face="fakeface", audio="opensmile", fps=10, llm="none")
    extract([clips], full, cfg, progress=False)
    assert_same_store(full, out)


def test_cli_exit_codes_and_messages(tmp_path):
    from msekit.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["extract", str(tmp_path / "missing"), "--out", str(tmp_path / "x.h5"),
                              "--face", "fakeface", "--llm", "none"])
    assert res.exit_code == 1 and "input not found" in res.output
    res = runner.invoke(app, ["extract", str(FIX / "empty.mp4"), str(FIX / "silent_video_noaudio.mp4"),
                              "--out", str(tmp_path / "y.h5"), "--face", "fakeface", "--fps", "10",
                              "--llm", "none", "--quiet"])
    assert res.exit_code == 1 and "1 item(s) failed" in res.output
    res = runner.invoke(app, ["extract", str(FIX / "silent_video_noaudio.mp4"), "--out",
                              str(tmp_path / "y.h5"), "--face", "fakeface", "--fps", "5",
                              "--llm", "none", "--quiet"])
    assert res.exit_code == 1 and "other settings" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, ["extract", str(FIX), "--out", str(tmp_path / "z.h5"),
                              "--face", "openface", "--fps", "10", "--llm", "none"])
    assert res.exit_code == 1 and "does not support --fps" in res.output
    res = runner.invoke(app, ["extract", str(FIX), "--out", str(tmp_path / "z.h5"), "--face", "nope"])
    assert res.exit_code == 1 and "video backend must be one of" in res.output
    res = runner.invoke(app, ["merge", str(tmp_path / "y.h5"), "--out", str(tmp_path / "y.h5")])
    assert res.exit_code == 1 and "also an input" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "nothing.h5")])
    assert res.exit_code == 1 and "no such store" in res.output
