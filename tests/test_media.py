"""msekit.media on the real fixture media (tests/fixtures, rebuilt by data/build_samples.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from msekit.errors import MediaError
from msekit.media import VIDEO_EXTENSIONS, iter_frames, load_audio, output_size, probe

FIX = Path(__file__).parent / "fixtures"


def _decoded_frames(path: Path) -> int:
    """ffprobe's own count of decodable video frames (decodes the stream)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True).stdout
    return int(out.strip().strip(","))


def test_video_extensions():
    assert VIDEO_EXTENSIONS == (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv")


def test_probe_single_face():
    info = probe(FIX / "single_face.mp4")
    assert (info.width, info.height, info.fps, info.n_frames) == (640, 360, 30.0, 72)
    assert info.has_audio and info.sample_rate == 44100
    assert info.duration == pytest.approx(2.4, abs=0.05)


def test_probe_no_audio():
    info = probe(FIX / "silent_video_noaudio.mp4")
    assert not info.has_audio and info.sample_rate == 0 and info.fps > 0


@pytest.mark.parametrize("name", ["single_face.mp4", "no_face.mp4", "silent_video_noaudio.mp4"])
def test_native_rate_frame_count_and_times(name):
    path = FIX / name
    info = probe(path)
    chunks = list(iter_frames(path, info, chunk=32))
    frames = sum(len(f) for f, _ in chunks)
    assert abs(frames - _decoded_frames(path)) <= 1
    times = np.concatenate([t for _, t in chunks])
    np.testing.assert_allclose(times, np.arange(frames) / info.fps)  # frame k starts at k / fps
    f0 = chunks[0][0]
    assert f0.dtype == np.uint8 and f0.shape[1:] == (info.height, info.width, 3)
    assert f0.std() > 10  # real picture content, not a blank buffer


@pytest.mark.parametrize("fps", [5.0, 12.5])
def test_resampled_frame_count(fps):
    path = FIX / "no_face.mp4"  # 24 fps, 3.9 s, 960x540
    info = probe(path)
    chunks = list(iter_frames(path, info, fps=fps, max_width=320, chunk=7))
    n = sum(len(f) for f, _ in chunks)
    assert abs(n - info.duration * fps) <= 1
    assert all(1 <= len(f) <= 7 and len(f) == len(t) for f, t in chunks)
    assert chunks[0][0].shape[1:] == (180, 320, 3)
    np.testing.assert_allclose(np.concatenate([t for _, t in chunks]), np.arange(n) / fps)


def test_chunks_never_exceed_chunk_size():
    path = FIX / "single_face.mp4"
    sizes = [len(f) for f, _ in iter_frames(path, probe(path), chunk=10)]
    assert sizes == [10] * 7 + [2]


def test_early_stop_releases_decoder():
    path = FIX / "single_face.mp4"
    gen = iter_frames(path, probe(path), chunk=4)
    frames, _ = next(gen)
    gen.close()  # kills ffmpeg; must not hang or raise
    assert frames.flags.writeable and frames.shape[0] == 4


def test_output_size_even_and_aspect():
    info = probe(FIX / "no_face.mp4")
    assert output_size(info, None) == (960, 540)
    assert output_size(info, 640) == (640, 360)
    assert output_size(info, 333) == (332, 186)
    assert output_size(info, 2000) == (960, 540)


def test_load_audio_length():
    for name in ("speech.wav", "single_face.mp4"):
        info = probe(FIX / name)
        x = load_audio(FIX / name)
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - info.duration * 16000) <= 0.03 * 16000
        assert 0.01 < np.abs(x).max() <= 1.0  # real sound, in range


def test_load_audio_other_rate():
    x = load_audio(FIX / "speech.wav", sample_rate=8000)
    assert abs(len(x) - probe(FIX / "speech.wav").duration * 8000) <= 80


def test_no_audio_stream_error():
    with pytest.raises(MediaError, match=r"silent_video_noaudio\.mp4 has no audio stream"):
        load_audio(FIX / "silent_video_noaudio.mp4")


@pytest.mark.parametrize("name, reason", [("empty.mp4", "empty"), ("corrupt.mp4", "corrupt"),
                                          ("missing.mp4", "no such file")])
def test_probe_errors_name_the_file(name, reason):
    with pytest.raises(MediaError, match=rf"{name.replace('.', '[.]')}.*{reason}"):
        probe(FIX / name)


def test_truncated_file_fails_on_decode():
    path = FIX / "truncated.mp4"  # its header probes fine and claims 19.7 s
    info = probe(path)
    with pytest.raises(MediaError, match=r"truncated\.mp4.*(corrupt or truncated|truncated)"):
        for _ in iter_frames(path, info):
            pass
    with pytest.raises(MediaError, match=r"truncated\.mp4"):
        load_audio(path)


def test_no_video_stream_error():
    path = FIX / "speech.wav"
    with pytest.raises(MediaError, match=r"speech\.wav: no video stream"):
        next(iter_frames(path, probe(path)))


def test_decoding_runs_the_chosen_ffmpeg(tmp_path, monkeypatch):
    from msekit import media
    from msekit.errors import MsekitError

    real = media.ffmpeg_exe()
    log = tmp_path / "calls.txt"
    wrapper = tmp_path / "ffmpeg-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(media.FFMPEG_ENV, str(wrapper))
    media.ffmpeg_exe.cache_clear()
    try:
        info = probe(FIX / "single_face.mp4")
        x = load_audio(FIX / "single_face.mp4", info=info)
        n = sum(len(t) for _, t in iter_frames(FIX / "single_face.mp4", info))
        assert x.size > 0 and n == 72
        calls = log.read_text().splitlines()
        assert len(calls) == 2 and "f32le" in calls[0] and "rawvideo" in calls[1]
        monkeypatch.setenv(media.FFMPEG_ENV, str(tmp_path / "no-ffmpeg"))
        media.ffmpeg_exe.cache_clear()
        with pytest.raises(MsekitError, match=r"cannot run ffmpeg .*no-ffmpeg.*MSEKIT_FFMPEG"):
            load_audio(FIX / "single_face.mp4", info=info)
        with pytest.raises(MsekitError, match="cannot run ffmpeg"):
            next(iter_frames(FIX / "single_face.mp4", info))
    finally:
        media.ffmpeg_exe.cache_clear()
