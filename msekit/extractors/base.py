"""The extractor protocol, the face column schema and the registry (with plugin discovery).

A backend is a class registered under (kind, name) with ``@register("video", "mine", MyConfig)``.
It is built once per worker from its config dataclass (models load in ``__init__``) and then called
once per media file. The CLI's choices come from ``names(kind)``.

What a backend declares (checked by ``register``, so a mistake fails at import, not mid-run):

- ``version`` (str): bump it when the rows change; it enters the store's settings hash.
- ``options`` (ClassVar dict): which of msekit's shared flags it takes, as
  ``{ExtractConfig field: its config field}``; e.g. ``{"fps": "fps", "face_model": "model_path"}``
  lets ``--fps`` and ``--face-model`` through. A value may be ``(field, convert)`` when the backend
  spells the setting differently. A shared flag the backend does not declare is refused when set.
  Every other config field is reachable with ``--face-option KEY=VALUE`` (``parse_options``).
- ``settings()``: the JSON-able settings saved with (and hashed into) the store; ``Backend``
  gives ``asdict(config)``; override it to e.g. keep only a model's file name.
- ``feature_names`` and ``extract(...) -> Modality`` (see ``VideoExtractor`` / ``AudioExtractor``).

A face backend writes the shared columns ``face_feature_names()`` (20 AUs, pitch yaw roll, face)
first, then its extras; ``msekit.extractors.face.finish_rows`` builds rows in that order.

Plugins: a package that declares an entry point in the group ``msekit.extractors``, e.g.
``myface = "mypkg.face"`` (pyproject ``[project.entry-points."msekit.extractors"]``), is imported
the first time the registry is read, and its ``@register`` makes ``--face myface`` work.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Protocol

from msekit.errors import MsekitError
from msekit.extractors.au_mapping import AU_NAMES
from msekit.media import MediaInfo  # noqa: F401  (re-exported: it used to live here)
from msekit.store import Modality

ENTRY_POINT_GROUP = "msekit.extractors"
POSE_NAMES: tuple[str, ...] = ("pitch", "yaw", "roll")
FACE_FLAG = "face"
FACE_COLUMNS: tuple[str, ...] = (*AU_NAMES, *POSE_NAMES, FACE_FLAG)
# The ExtractConfig fields a backend may take through ``options``.
SHARED_OPTIONS = {"video": ("fps", "face_model", "blendshapes"),
                  "audio": ("audio_features", "functionals")}


def face_feature_names(extra: Sequence[str] = ()) -> list[str]:
    """The column order every face backend writes: 20 AUs, pitch yaw roll, face, then ``extra``."""
    return [*FACE_COLUMNS, *extra]


class VideoExtractor(Protocol):
    """Per-frame visual features of one video.

    ``extract`` returns a Modality with data (T, D) where D == len(feature_names), times (T, 2)
    and mask (T,) (False where no face was found; such rows hold zeros, never NaN).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    options: ClassVar[Mapping[str, Any]]
    feature_names: list[str]

    def settings(self) -> dict[str, Any]: ...

    def extract(self, path: Path, info: MediaInfo) -> Modality: ...


class AudioExtractor(Protocol):
    """Frame-level acoustic features of a mono signal.

    ``extract`` takes (S,) float32 samples at ``sample_rate`` and returns a Modality
    (T, D) with [start, end) times in seconds.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    options: ClassVar[Mapping[str, Any]]
    feature_names: list[str]
    frame_shift: float

    def settings(self) -> dict[str, Any]: ...

    def extract(self, signal: Any, sample_rate: int) -> Modality: ...


class Backend:
    """Defaults for a backend class: no shared flags, settings = the config as a dict."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    options: ClassVar[Mapping[str, Any]] = {}
    config: Any

    def settings(self) -> dict[str, Any]:
        """The settings saved with the store (the config dataclass as a dict)."""
        return asdict(self.config)


_REGISTRY: dict[str, dict[str, tuple[type, type]]] = {"video": {}, "audio": {}}
_PLUGIN_ERRORS: dict[str, str] = {}  # entry point name -> why it failed to load
_LOADED = False


def register(kind: str, name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: make an extractor available as ``name`` for modality ``kind``.

    Raises:
        MsekitError: the kind is unknown or the class does not follow the protocol.
    """
    if kind not in _REGISTRY:
        raise MsekitError(f"register: kind must be one of {sorted(_REGISTRY)}, got {kind!r}")

    def deco(cls: type) -> type:
        _check_protocol(kind, name, cls, config_cls)
        cls.name = name
        _REGISTRY[kind][name] = (cls, config_cls)
        return cls

    return deco


def _check_protocol(kind: str, name: str, cls: type, config_cls: type) -> None:
    where = f"{kind} backend {name!r} ({cls.__module__}.{cls.__qualname__})"
    if not dataclasses.is_dataclass(config_cls):
        raise MsekitError(f"{where}: its config {config_cls.__name__} must be a dataclass")
    missing = [m for m in ("extract", "settings") if not callable(getattr(cls, m, None))]
    missing += [a for a in ("version", "options") if not hasattr(cls, a)]
    if missing:
        raise MsekitError(f"{where} lacks {missing}; derive it from msekit.extractors.base.Backend")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for ours, theirs in cls.options.items():
        target = theirs[0] if isinstance(theirs, tuple) else theirs
        if ours not in SHARED_OPTIONS[kind] or target not in fields:
            raise MsekitError(f"{where}: options maps {ours!r} -> {target!r}, but the shared "
                              f"options are {list(SHARED_OPTIONS[kind])} and its config fields "
                              f"{sorted(fields)}")


def names(kind: str) -> list[str]:
    """Registered backend names for a modality kind ('video' or 'audio')."""
    _load_builtin()
    if kind not in _REGISTRY:
        raise MsekitError(f"modality kind must be one of {sorted(_REGISTRY)}, got {kind!r}")
    return sorted(_REGISTRY[kind])


def backend_class(kind: str, name: str) -> type:
    """The registered extractor class of ``name`` (its ``options``, ``version``)."""
    _load_builtin()
    _check(kind, name)
    return _REGISTRY[kind][name][0]


def config_class(kind: str, name: str) -> type:
    """The config dataclass of backend ``name``."""
    _load_builtin()
    _check(kind, name)
    return _REGISTRY[kind][name][1]


def create(kind: str, name: str, config: Any = None) -> Any:
    """Build the extractor ``name`` of ``kind`` (loads its models once)."""
    _load_builtin()
    _check(kind, name)
    cls, cfg_cls = _REGISTRY[kind][name]
    return cls(config if config is not None else cfg_cls())


def parse_options(kind: str, name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> config fields of backend ``name``, typed from the dataclass.

    Values are converted to the field's type: bool (true/false/1/0/yes/no), int, float, str;
    ``none`` gives None where the field allows it.

    Raises:
        MsekitError: a pair without '=', an unknown key (the message names the allowed ones), or
            a value that is not of the field's type.

    Examples:
        >>> parse_options("video", "openface", ["min_confidence=0.8", "gaze=yes"])
        {'min_confidence': 0.8, 'gaze': True}
    """
    flag = "--face-option" if kind == "video" else "--audio-option"
    return parse_fields(config_class(kind, name), pairs, flag, f"{kind} backend {name!r}")


def parse_fields(cls: type, pairs: Sequence[str], flag: str, what: str,
                 exclude: Sequence[str] = ()) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> fields of the dataclass ``cls`` (typed as in :func:`parse_options`).

    ``exclude`` names fields that have their own command-line flag; ``what`` and ``flag`` name
    the thing and the flag in error messages.

    Examples:
        >>> from msekit.asr import AsrConfig
        >>> parse_fields(AsrConfig, ["beam_size=5", "vad=no"], "--asr-option", "ASR", exclude=("model",))
        {'beam_size': 5, 'vad': False}
    """
    types = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MsekitError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {allowed[0]}=...")
        if key not in allowed:
            raise MsekitError(f"{flag} {key}: {what} has no option {key!r}; allowed: {', '.join(allowed)}")
        out[key] = _convert(value.strip(), types.get(key, str), f"{flag} {key}")
    return out


def _convert(text: str, hint: Any, where: str) -> Any:
    """A string as the type ``hint`` (a plain type or an Optional of one)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    target = args[0] if args else hint
    if optional and text.lower() in ("none", "null", ""):
        return None
    if target is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise MsekitError(f"{where}={text}: expected true or false")
    if target in (int, float):
        try:
            return target(text)
        except ValueError:
            raise MsekitError(f"{where}={text}: expected a number ({target.__name__})") from None
    return text


def plugin_errors() -> dict[str, str]:
    """Entry points of the ``msekit.extractors`` group that failed to import, with the reason."""
    _load_builtin()
    return dict(_PLUGIN_ERRORS)


def _check(kind: str, name: str) -> None:
    if kind not in _REGISTRY:
        raise MsekitError(f"modality kind must be one of {sorted(_REGISTRY)}, got {kind!r}")
    if name not in _REGISTRY[kind]:
        why = (f" (the plugin {name!r} failed to import: {_PLUGIN_ERRORS[name]})"
               if name in _PLUGIN_ERRORS else "")
        raise MsekitError(f"{kind} backend must be one of {sorted(_REGISTRY[kind])}, "
                          f"got {name!r}{why}")


def _load_builtin() -> None:
    """Import the built-in backends and, once, every ``msekit.extractors`` entry point."""
    global _LOADED
    import msekit.extractors  # noqa: F401  (runs the built-in @register decorators)

    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()  # importing the module runs its @register
        except Exception as e:  # one broken plugin must not take msekit down
            _PLUGIN_ERRORS[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"


def given_model_file(candidates: tuple[tuple[str, str | os.PathLike | None], ...], what: str,
                     hint: str) -> Path | None:
    """The first model file given among ``candidates`` = ((where it came from, path or None), ...),
    or None when none is given.

    Raises:
        MsekitError: a given path that is not a file (``what`` from <where> not found: <path>; hint).
    """
    for source, candidate in candidates:
        if candidate:
            p = Path(candidate).expanduser()
            if not p.is_file():
                raise MsekitError(f"{what} from {source} not found: {p}; {hint}")
            return p
    return None
