"""The installed ``msekit`` executable, run as users run it: one line per mistake, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "msekit"
if not EXE.exists():  # pragma: no cover - an install without console scripts
    EXE = Path(shutil.which("msekit") or "msekit")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["trian"], "No such command 'trian'"),
        (["extract", "data/ravdess"], "Missing option '--out'"),
        (["extract", "x.mp4", "--out", "s.h5", "--bogus"], "No such option: --bogus"),
        (["extract", "x.mp4", "--out", "s.h5", "--workers", "0"], "'--workers'"),
        (["split"], "Missing argument"),
        (["train", "s.h5", "--epochs", "many"], "'--epochs'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, needle, tmp_path):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0] and "--help" in lines[0]


def test_bare_msekit_prints_help_without_traceback():
    res = run()
    assert res.returncode == 2
    assert "Traceback" not in res.stdout + res.stderr
    assert "extract" in res.stdout + res.stderr


def test_a_user_error_is_one_line_and_exit_1(tmp_path):
    res = run("inspect", str(tmp_path / "missing.h5"))
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "missing.h5" in lines[0]


def test_version_exits_0():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("msekit ")


@pytest.mark.parametrize(
    "option, needle",
    [
        ("beam=3", "--asr-option beam: ASR has no option 'beam'; allowed: beam_size, vad, min_window, align"),
        ("beam_size=0", "ASR beam_size must be >= 1"),
        ("vad=maybe", "--asr-option vad=maybe: expected true or false"),
        ("model=tiny.en", "has no option 'model'"),  # it has its own flag, --asr-model
    ],
)
def test_a_bad_asr_option_is_one_line_before_any_work(option, needle, tmp_path):
    clip = Path(__file__).resolve().parents[1] / "data/ravdess/ravdess_03-01-05-02-02-02-05.mp4"
    res = run("extract", str(clip), "--out", "s.h5", "--asr-option", option, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert not (tmp_path / "s.h5").exists()
