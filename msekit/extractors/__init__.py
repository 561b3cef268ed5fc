"""Feature extractors, one module per backend, all behind the protocol in ``base``."""

from __future__ import annotations

from msekit.extractors.base import AudioExtractor, MediaInfo, VideoExtractor, create, names, register

__all__ = ["AudioExtractor", "MediaInfo", "VideoExtractor", "create", "names", "register"]
