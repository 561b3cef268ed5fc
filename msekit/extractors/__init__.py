"""Feature extractors, one module per backend, all behind the protocol in ``base``.

Importing this package registers the built-in backends: video ``mediapipe``, ``openface``,
``pyfeat`` (optional dependency, checked when created) and audio ``opensmile``. The backends
import their heavy libraries (mediapipe, opensmile, py-feat) only when an extractor is created.
"""

from __future__ import annotations

from msekit.extractors import mediapipe_face, openface, opensmile_audio, pyfeat_face  # noqa: F401
from msekit.extractors.base import (
    AudioExtractor,
    Backend,
    VideoExtractor,
    create,
    face_feature_names,
    names,
    parse_options,
    register,
)
from msekit.extractors.face import finish_rows
from msekit.media import MediaInfo

__all__ = ["AudioExtractor", "Backend", "MediaInfo", "VideoExtractor", "create",
           "face_feature_names", "finish_rows", "names", "parse_options", "register"]
