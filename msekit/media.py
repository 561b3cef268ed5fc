"""Media decoding with ffmpeg: probe a file, load its audio, stream its video frames.

Everything goes through the ``ffmpeg`` / ``ffprobe`` executables (driven by ffmpeg-python), so any
container and codec that ffmpeg reads works. Decoding prefers the static ffmpeg build that the
imageio-ffmpeg package ships (see ``ffmpeg_exe``): it starts in about 15 ms where a distribution's
ffmpeg, linked against 200+ shared libraries, takes about 100 ms, which is a tenth of a second per
clip on datasets of short clips. Probing uses ``ffprobe`` from the PATH. Video is decoded into a stdout pipe and read one chunk
of frames at a time: memory stays at one chunk, and no image is ever written to disk.

Frame timing convention (used by every video extractor): video is always decoded at a *constant*
rate ``r`` (the native rate when ``fps=None``, otherwise the requested one) through ffmpeg's ``fps``
filter, which also turns variable-frame-rate video into constant-rate video by duplicating or
dropping frames. Output frame ``k`` then covers ``[k / r, (k + 1) / r)`` seconds, measured from the
first decoded video frame, and ``times[k] = k / r`` is its start.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import ffmpeg
import numpy as np

from msekit.errors import MediaError, MsekitError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv")

__all__ = ["VIDEO_EXTENSIONS", "MediaInfo", "ffmpeg_exe", "iter_frames", "load_audio", "probe"]
FFMPEG_ENV = "MSEKIT_FFMPEG"

# A decode that ends with errors and fewer than this share of the expected frames is truncated.
_MIN_DECODED_SHARE = 0.9


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


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg executable used for decoding.

    ``$MSEKIT_FFMPEG`` when set, else imageio-ffmpeg's static build when that package is installed
    (its own ``$IMAGEIO_FFMPEG_EXE`` is honoured), else ``ffmpeg`` from the PATH.
    """
    if os.environ.get(FFMPEG_ENV):
        return os.environ[FFMPEG_ENV]
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # not installed, or no binary for this platform
        return "ffmpeg"


def _no_ffmpeg(e: OSError) -> MsekitError:
    return MsekitError(f"cannot run ffmpeg ({ffmpeg_exe()}: {e}); install it (apt-get install ffmpeg, "
                       f"or pip install imageio-ffmpeg) or point ${FFMPEG_ENV} at an ffmpeg binary")


def _last_line(text: str, first: bool = False) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[0] if first else lines[-1]) if lines else "no message"


def _rate(text: str | None) -> Fraction:
    """ffprobe's "30000/1001" (or "0/0") as a Fraction; 0 when missing or invalid."""
    try:
        num, _, den = (text or "0/0").partition("/")
        return Fraction(int(num), int(den or 1)) if int(den or 1) else Fraction(0)
    except ValueError:
        return Fraction(0)


def _native_rate(stream: dict) -> Fraction:
    """The constant rate that best describes a video stream.

    ``r_frame_rate`` is exact for constant-rate video (e.g. 24000/1001) but can be a timebase
    artifact (90000/1) for variable-rate video; ``avg_frame_rate`` is frames / duration. Take
    r_frame_rate when the two agree within 5 %, else the average.
    """
    r, avg = _rate(stream.get("r_frame_rate")), _rate(stream.get("avg_frame_rate"))
    if r > 0 and (avg <= 0 or abs(r - avg) <= 0.05 * avg):
        return r
    return avg if avg > 0 else r


def _rotation(stream: dict) -> int:
    """Display rotation in degrees (phone videos), from the side data or the old 'rotate' tag."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(float(side["rotation"])) % 360
    try:
        return int(float(stream.get("tags", {}).get("rotate", 0))) % 360
    except ValueError:
        return 0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty (0 bytes) at {path}; re-copy or re-encode it")


def _probe_json(path: Path) -> dict:
    try:
        return ffmpeg.probe(str(path))
    except ffmpeg.Error as e:
        reason = _last_line(e.stderr.decode("utf-8", "replace") if e.stderr else "")
        raise MediaError(
            f"{path.name}: ffprobe cannot read it ({reason}); the file at {path} is corrupt, "
            "truncated or in an unsupported format; re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`"
        ) from None
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise MediaError(f"{path.name}: ffprobe failed ({e}); is ffmpeg installed?") from None


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a media file with ffprobe (cheap: reads headers only).

    Args:
        path: a video or audio file.

    Returns:
        MediaInfo with the duration, native frame rate (constant-rate estimate, see
        ``_native_rate``), displayed frame size (after rotation), the header's frame count and
        the audio stream's presence and rate.

    Raises:
        MediaError: the file is missing, empty, unreadable by ffprobe, or has neither a video
            nor an audio stream.

    Examples:
        >>> info = probe("tests/fixtures/single_face.mp4")
        >>> (info.width, info.height, round(info.fps), info.has_audio)
        (640, 360, 30, True)
    """
    path = Path(path)
    _check_file(path)
    meta = _probe_json(path)
    streams = meta.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise MediaError(f"{path.name}: no video or audio stream in {path}; is it a media file?")

    durations = [float(meta.get("format", {}).get("duration") or 0.0)]
    durations += [float(s.get("duration") or 0.0) for s in (video, audio) if s is not None]
    duration = max(durations)

    fps, width, height, n_frames = 0.0, 0, 0, 0
    if video is not None:
        fps = float(_native_rate(video))
        width, height = int(video.get("width") or 0), int(video.get("height") or 0)
        if _rotation(video) in (90, 270):  # ffmpeg auto-rotates on decode
            width, height = height, width
        n_frames = int(video.get("nb_frames") or 0)
        if duration <= 0 and n_frames and fps:
            duration = n_frames / fps
    return MediaInfo(
        path=path,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        n_frames=n_frames,
        has_audio=audio is not None,
        sample_rate=int(audio.get("sample_rate") or 0) if audio is not None else 0,
    )


def load_audio(path: str | os.PathLike, sample_rate: int = 16000,
               info: MediaInfo | None = None) -> np.ndarray:
    """Decode the first audio stream to mono float32 at ``sample_rate`` (ffmpeg resamples).

    Args:
        path: a video or audio file.
        sample_rate: output rate in Hz.
        info: its ``probe`` result when the caller has it (saves probing the file again).

    Returns:
        (S,) float32 samples in [-1, 1].

    Raises:
        MediaError: the file is unreadable, has no audio stream, or its audio cannot be decoded.

    Examples:
        >>> x = load_audio("tests/fixtures/speech.wav")
        >>> x.dtype, x.ndim
        (dtype('float32'), 1)
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    info = info if info is not None else probe(path)
    if not info.has_audio:
        raise MediaError(f"{info.path.name} has no audio stream ({info.path}); use a video with "
                         "sound, or extract the video modality only")
    try:
        out, err = (
            ffmpeg.input(str(info.path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, map="0:a:0")
            .global_args("-nostdin", "-v", "error")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
    except OSError as e:
        raise _no_ffmpeg(e) from None
    except ffmpeg.Error as e:
        reason = _last_line(e.stderr.decode("utf-8", "replace") if e.stderr else "")
        raise MediaError(f"{info.path.name}: cannot decode its audio ({reason}); the file at "
                         f"{info.path} is corrupt or truncated") from None
    signal = np.frombuffer(out, np.float32).copy()  # (S,)
    if signal.size == 0:
        reason = _last_line(err.decode("utf-8", "replace"))
        raise MediaError(f"{info.path.name}: its audio stream decoded to 0 samples ({reason}); "
                         f"the file at {info.path} is corrupt or truncated")
    return signal


def output_size(info: MediaInfo, max_width: int | None = None) -> tuple[int, int]:
    """The (width, height) that ``iter_frames`` yields: downscaled to ``max_width`` keeping the
    aspect ratio, with even dimensions, when the video is wider; otherwise the native size."""
    w, h = info.width, info.height
    if max_width is None or w <= max_width:
        return w, h
    new_w = max(2, max_width - max_width % 2)
    new_h = max(2, int(round(h * new_w / w / 2.0)) * 2)
    return new_w, new_h


def iter_frames(
    path: str | os.PathLike,
    info: MediaInfo,
    fps: float | None = None,
    max_width: int | None = None,
    chunk: int = 32,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream decoded RGB frames in chunks through an ffmpeg pipe.

    Frame ``k`` of the output starts at ``k / r`` seconds, where ``r`` is ``fps`` or the native
    rate ``info.fps`` (see the module docstring); ffmpeg's ``fps`` filter makes the rate constant,
    so variable-frame-rate input gets exact, evenly spaced timestamps.

    Args:
        path: the video file.
        info: its ``probe`` result.
        fps: output frame rate; None keeps the native rate.
        max_width: downscale wider frames to this width, keeping the aspect (even sizes).
        chunk: frames per yielded chunk (the most held in memory at once).

    Yields:
        (frames, times): frames (n, H, W, 3) uint8 RGB with 1 <= n <= chunk, and times (n,)
        float64 frame starts in seconds.

    Raises:
        MediaError: no video stream, or the file is corrupt or truncated (possibly after some
            chunks were yielded, when the damage is past the start).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0 or None, got {fps}")
    if max_width is not None and max_width < 2:
        raise ValueError(f"max_width must be >= 2 or None, got {max_width}")
    path = Path(path)
    if info.width <= 0 or info.height <= 0 or info.fps <= 0:
        raise MediaError(f"{path.name}: no video stream in {path}; give a video file")
    rate = Fraction(fps).limit_denominator(1001) if fps is not None else Fraction(info.fps).limit_denominator(1001)
    width, height = output_size(info, max_width)
    frame_bytes = width * height * 3
    proc, err_chunks, drain = _start_decoder(path, info, rate, width, height)
    n_done = 0
    try:
        while True:
            buf = bytearray(chunk * frame_bytes)
            n_bytes = _read_into(proc.stdout, buf)
            n = n_bytes // frame_bytes
            if n:
                frames = np.frombuffer(buf, np.uint8, count=n * frame_bytes)
                frames = frames.reshape(n, height, width, 3)  # (n, H, W, 3)
                times = (n_done + np.arange(n)) / float(rate)  # (n,)
                n_done += n
                yield frames, times
            if n_bytes < len(buf):
                break
        rc = proc.wait()
        drain.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    _check_decoded(path, info, rate, rc, n_done, b"".join(err_chunks).decode("utf-8", "replace"))


def _start_decoder(path: Path, info: MediaInfo, rate: Fraction, width: int,
                   height: int) -> tuple[Any, list[bytes], threading.Thread]:
    """Start ffmpeg writing raw RGB frames to a pipe: (process, stderr chunks, drain thread)."""
    stream = ffmpeg.input(str(path)).video.filter("fps", fps=f"{rate.numerator}/{rate.denominator}")
    if (width, height) != (info.width, info.height):
        stream = stream.filter("scale", width, height, flags="area")
    try:
        proc = (
            stream.output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-nostdin", "-v", "error")
            .run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
        )
    except OSError as e:
        raise _no_ffmpeg(e) from None
    # ffmpeg blocks when its stderr pipe fills: drain it in a thread (only errors are printed).
    err_chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: err_chunks.extend(iter(lambda: proc.stderr.read(4096), b"")),
                             daemon=True)
    drain.start()
    return proc, err_chunks, drain


def _check_decoded(path: Path, info: MediaInfo, rate: Fraction, rc: int, n_done: int,
                   stderr: str) -> None:
    """Raise when ffmpeg failed, or stopped well short of the expected frames with errors.

    Raises:
        MediaError: the file is corrupt or truncated.
    """
    expected = info.n_frames * float(rate) / info.fps if info.n_frames else info.duration * float(rate)
    if rc != 0 or n_done == 0:
        raise MediaError(f"{path.name}: ffmpeg could not decode the video after {n_done} frames "
                         f"({_last_line(stderr, first=True)}); the file at {path} is corrupt or truncated")
    if stderr.strip() and n_done < _MIN_DECODED_SHARE * expected - 1:
        raise MediaError(f"{path.name}: decoding stopped at frame {n_done} of ~{expected:.0f} "
                         f"({_last_line(stderr, first=True)}); the file at {path} is truncated")


def _read_into(pipe: IO[bytes], buf: bytearray) -> int:
    """Fill ``buf`` from a pipe; returns the bytes read (fewer only at end of stream)."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = pipe.readinto(view[got:])
        if not n:
            break
        got += n
    return got
