"""openSMILE backend: eGeMAPSv02 or ComParE_2016 acoustic features of a mono signal.

Two levels:

- ``lld`` (default): low-level descriptors every 10 ms (eGeMAPSv02: 25 per frame, windows of
  20 ms for energy/spectral and 60 ms for pitch-related descriptors; ComParE_2016: 65).
  openSMILE only emits frames whose whole window fits in the signal, which would leave the last
  40-60 ms without frames; msekit pads the end with 60 ms of zeros and keeps the frames that start
  inside the signal, so a signal of ``d`` seconds has ``ceil(d / 0.01)`` frames, aligned with the
  video's timeline to the end (frames in the last 60 ms see some padding silence).
- ``functionals``: one row of utterance statistics spanning the whole signal (eGeMAPSv02: 88,
  ComParE_2016: 6373).

Times are openSMILE's own [start, end) of each frame (a repeated final frame, which ComParE_2016
emits, is dropped). Non-finite values (openSMILE writes -inf
for e.g. log energy of digital silence) mask their frame False, and a masked frame holds zeros
only, as the store expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from msekit.errors import MsekitError
from msekit.extractors.base import Backend, register
from msekit.store import Modality

FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")
LEVELS = ("lld", "functionals")
_END_PAD = 0.06  # seconds of zeros after the signal: the longest eGeMAPS/ComParE LLD window


@dataclass
class OpenSmileConfig:
    """Settings of the openSMILE backend (saved with the store)."""

    feature_set: str = field(default="eGeMAPSv02", metadata={"help": f"one of {FEATURE_SETS}"})
    level: str = field(default="lld", metadata={
        "help": "lld: frames every 10 ms; functionals: one row for the whole signal"})

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise MsekitError(f"opensmile feature_set must be one of {list(FEATURE_SETS)}, "
                              f"got {self.feature_set!r}")
        if self.level not in LEVELS:
            raise MsekitError(f"opensmile level must be one of {list(LEVELS)}, got {self.level!r}")


@register("audio", "opensmile", OpenSmileConfig)
class OpenSmileAudio(Backend):
    """Acoustic features with openSMILE, computed on the in-memory signal.

    Args:
        config: the backend settings.

    Examples:
        >>> from msekit.media import load_audio
        >>> ex = OpenSmileAudio(OpenSmileConfig())
        >>> audio = ex.extract(load_audio("tests/fixtures/speech.wav"), 16000)
        >>> audio.data.shape[1], ex.frame_shift
        (25, 0.01)
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    options: ClassVar[dict] = {"audio_features": "feature_set",
                               "functionals": ("level", lambda on: "functionals" if on else "lld")}
    frame_shift: float = 0.01

    def __init__(self, config: OpenSmileConfig) -> None:
        import opensmile

        self.config = config
        level = (opensmile.FeatureLevel.LowLevelDescriptors if config.level == "lld"
                 else opensmile.FeatureLevel.Functionals)
        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet[config.feature_set],
                                      feature_level=level)
        self.feature_names: list[str] = list(self._smile.feature_names)

    def extract(self, signal: Any, sample_rate: int) -> Modality:
        """Features of one signal.

        Args:
            signal: (S,) float samples in [-1, 1] (16 kHz mono in msekit's pipeline).
            sample_rate: its rate in Hz.

        Returns:
            Modality (T, D): T frames of LLDs with their [start, end) seconds, or one row of
            functionals spanning [0, S / sample_rate). An empty signal gives T = 0.

        Raises:
            MsekitError: the signal is not 1-D or the rate is not positive.
        """
        x = np.asarray(signal, np.float32)
        if x.ndim != 1:
            raise MsekitError(f"opensmile needs a mono (S,) signal, got shape {x.shape}; "
                              "load it with msekit.media.load_audio")
        if sample_rate <= 0:
            raise MsekitError(f"opensmile sample_rate must be > 0, got {sample_rate}")
        dim = len(self.feature_names)
        if x.size == 0:
            return Modality.empty(dim)
        duration = x.size / sample_rate
        if self.config.level == "lld":
            x = np.concatenate([x, np.zeros(int(_END_PAD * sample_rate), np.float32)])
        table = self._smile.process_signal(x, sample_rate)
        data = np.array(table.to_numpy(np.float64)).reshape(-1, dim)  # (T, D), writable copy
        starts = table.index.get_level_values("start").total_seconds().to_numpy()
        ends = table.index.get_level_values("end").total_seconds().to_numpy()
        # ComParE_2016 LLD repeats its last frame's [start, end) with slightly other values (a
        # window cut at the signal end); keep the first so times strictly increase.
        keep = np.r_[True, starts[1:] > starts[:-1]]
        if self.config.level == "lld":
            keep &= starts < duration - 1e-9
        else:  # functionals span the real signal, not the padding
            ends = np.minimum(ends, duration)
        data, starts, ends = data[keep], starts[keep], ends[keep]
        finite = np.isfinite(data)
        mask = finite.all(axis=1)  # (T,)
        data[~mask] = 0.0  # the store's contract: a masked frame holds zeros only
        return Modality(data.astype(np.float32), np.stack([starts, ends], axis=1), mask)
