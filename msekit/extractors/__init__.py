"""Feature extractors, one module per backend, all behind the protocol in ``base``.

Importing this package registers the built-in backends: video ``mediapipe``, ``openface``,
``pyfeat`` (optional dependency, checked when created) and audio ``opensmile``. The backends
import their heavy libraries (mediapipe, opensmile, py-feat) only when an extractor is created.
"""

from __future__ import annotations

from msekit.extractors import mediapipe_face, openface, opensmile_audio, pyfeat_face  # noqa: F401
from msekit.extractors.base import (
    AudioExtractor,
    MediaInfo,
    VideoExtractor,
    create,
    names,
    register,
)

__all__ = ["AudioExtractor", "MediaInfo", "VideoExtractor", "create", "names", "register"]
