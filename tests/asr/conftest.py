"""Shared ASR test media: the bundled LibriVox clips and generated silence / tones."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from msekit import media

ROOT = Path(__file__).resolve().parents[2]
LIBRIVOX = ROOT / "data" / "librivox"


def librivox() -> list[dict[str, str]]:
    """[{id, text, path}] of the 5 bundled LibriVox clips with their reference transcripts."""
    with open(LIBRIVOX / "transcripts.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [dict(r, path=str(LIBRIVOX / f"{r['id']}.mp4")) for r in rows]


@pytest.fixture(scope="session")
def speech():
    """[(row, 16 kHz signal)] of the LibriVox clips."""
    return [(r, media.load_audio(r["path"], 16000)) for r in librivox()]


def make_clip(path: Path, audio: str, seconds: float = 3.0) -> Path:
    """A small mp4: a grey 160x120 picture and the lavfi audio source ``audio`` (its own
    duration option set to ``seconds``)."""
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=gray:s=160x120:r=10:d={seconds}", "-f", "lavfi", "-i",
                    audio.format(d=seconds),
                    "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-ar", "16000", str(path)], check=True, capture_output=True)
    return path
