"""The extractor protocol and registry: every backend of a modality looks the same to extraction.

An extractor is a class registered under (kind, name) with ``@register("video", "mediapipe")``.
It is built once per worker from its config dataclass (models load in ``__init__``) and then called
once per media file. The CLI's choices come from ``names(kind)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from msekit.errors import MsekitError
from msekit.store import Modality


@dataclass
class MediaInfo:
    """What ffprobe says about a media file.

    Attributes:
        path: the file.
        duration: seconds (container duration, or the longest stream).
        fps: native video frame rate (0.0 when there is no video stream).
        width, height: frame size in pixels (0 without video).
        n_frames: frames in the video stream as ffprobe counts them (0 if unknown).
        has_audio: whether an audio stream exists.
        sample_rate: native audio sample rate (0 without audio).
    """

    path: Path
    duration: float
    fps: float
    width: int
    height: int
    n_frames: int
    has_audio: bool
    sample_rate: int


class VideoExtractor(Protocol):
    """Per-frame visual features of one video.

    ``extract`` returns a Modality with data (T, D) where D == len(feature_names), times (T, 2)
    and mask (T,) (False where no face was found; such rows hold zeros, never NaN).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    feature_names: list[str]

    def extract(self, path: Path, info: MediaInfo) -> Modality: ...


class AudioExtractor(Protocol):
    """Frame-level acoustic features of a mono signal.

    ``extract`` takes (S,) float32 samples at ``sample_rate`` and returns a Modality
    (T, D) with [start, end) times in seconds.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    feature_names: list[str]
    frame_shift: float

    def extract(self, signal: Any, sample_rate: int) -> Modality: ...


_REGISTRY: dict[str, dict[str, tuple[type, type]]] = {"video": {}, "audio": {}}


def register(kind: str, name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: make an extractor available as ``name`` for modality ``kind``."""

    def deco(cls: type) -> type:
        cls.name = name
        _REGISTRY[kind][name] = (cls, config_cls)
        return cls

    return deco


def names(kind: str) -> list[str]:
    """Registered backend names for a modality kind ('video' or 'audio')."""
    _load_builtin()
    return sorted(_REGISTRY[kind])


def config_class(kind: str, name: str) -> type:
    _load_builtin()
    _check(kind, name)
    return _REGISTRY[kind][name][1]


def create(kind: str, name: str, config: Any = None) -> Any:
    """Build the extractor ``name`` of ``kind`` (loads its models once)."""
    _load_builtin()
    _check(kind, name)
    cls, cfg_cls = _REGISTRY[kind][name]
    return cls(config if config is not None else cfg_cls())


def _check(kind: str, name: str) -> None:
    if kind not in _REGISTRY:
        raise MsekitError(f"modality kind must be one of {sorted(_REGISTRY)}, got {kind!r}")
    if name not in _REGISTRY[kind]:
        raise MsekitError(f"{kind} backend must be one of {sorted(_REGISTRY[kind])}, got {name!r}")


def _load_builtin() -> None:
    # Importing the backend modules runs their @register decorators.
    import msekit.extractors  # noqa: F401
