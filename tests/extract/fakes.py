"""Tiny, fast extractors for orchestration tests (registered as 'fakeface' / 'fakeaudio').

They are real in what matters to extraction: the video one decodes the frames through
msekit.media at the configured fps, the audio one frames the 16 kHz signal every 10 ms.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from msekit.extractors.base import Backend, MediaInfo, register
from msekit.media import iter_frames
from msekit.store import Modality


def _maybe_die(path: Path) -> None:
    """Lets the engine tests kill a worker mid-run: when the file $MSEKIT_FAKE_DIE holds this
    file's stem, the one worker that manages to delete it kills itself (SIGKILL, as the OOM
    killer would)."""
    flag = os.environ.get("MSEKIT_FAKE_DIE")
    try:
        if not flag or Path(flag).read_text() != path.stem:
            return
        os.remove(flag)
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FakeFaceConfig:
    fps: float | None = None
    blendshapes: bool = False
    model_path: str | None = None


@register("video", "fakeface", FakeFaceConfig)
class FakeFace(Backend):
    version: ClassVar[str] = "0"
    options: ClassVar[dict] = {"fps": "fps", "face_model": "model_path", "blendshapes": "blendshapes"}

    def __init__(self, config: FakeFaceConfig) -> None:
        self.config = config
        self.feature_names = ["AU01", "AU02", "pitch", "face"]
        if os.environ.get("MSEKIT_FAKE_SLOW"):  # lets the kill -9 test catch a run midway
            self.delay = float(os.environ["MSEKIT_FAKE_SLOW"])
        else:
            self.delay = 0.0

    def extract(self, path: Path, info: MediaInfo) -> Modality:
        _maybe_die(path)
        rows, times = [], []
        for frames, t in iter_frames(path, info, fps=self.config.fps, max_width=64):
            f = frames.astype(np.float32) / 255.0  # (n, H, W, 3)
            rows.append(np.stack([f[..., 0].mean((1, 2)), f[..., 1].mean((1, 2)),
                                  f[..., 2].mean((1, 2)), np.ones(len(f))], 1))  # (n, 4)
            times.append(t)
        if self.delay:
            import time

            time.sleep(self.delay)
        t = np.concatenate(times)
        rate = self.config.fps or info.fps
        data = np.concatenate(rows)
        mask = data[:, :3].mean(1) > 0.02  # "a face": any non-black frame
        data[~mask] = 0.0
        return Modality(data, np.stack([t, t + 1 / rate], 1), mask)


@dataclass
class FakeAudioConfig:
    feature_set: str = "eGeMAPSv02"
    functionals: bool = False


@register("audio", "fakeaudio", FakeAudioConfig)
class FakeAudio(Backend):
    version: ClassVar[str] = "0"
    options: ClassVar[dict] = {"audio_features": "feature_set", "functionals": "functionals"}
    frame_shift = 0.01

    def __init__(self, config: FakeAudioConfig) -> None:
        self.config = config
        self.feature_names = ["Loudness_sma3", "F0semitoneFrom27.5Hz_sma3nz"]

    def extract(self, signal: np.ndarray, sample_rate: int) -> Modality:
        hop = int(sample_rate * self.frame_shift)
        n = len(signal) // hop
        frames = signal[: n * hop].reshape(n, hop)  # (T, hop)
        rms = np.sqrt((frames ** 2).mean(1))
        zc = (np.diff(np.sign(frames), axis=1) != 0).mean(1) * 50
        start = np.arange(n) * self.frame_shift
        return Modality(np.stack([rms, zc], 1), np.stack([start, start + self.frame_shift], 1),
                        np.ones(n, bool))
