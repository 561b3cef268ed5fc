"""Micro benchmark of the extract stage's backends on this machine's CPU.

Measures, on the bundled real media:
- decode: ffmpeg pipe decoding (msekit.media.iter_frames) in ms per frame,
- mediapipe: FaceLandmarker + AU mapping per frame at 640x360 (native size, native rate), wall
  and CPU ms (CPU counts this process's threads only, not ffmpeg's),
- opensmile: real-time factor (compute seconds / audio seconds) on 60 s of real speech,
  eGeMAPSv02 LLD and functionals.

Usage:
    .venv/bin/python bench/bench_extractors.py [--video tests/fixtures/single_face.mp4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from msekit.extractors import create
from msekit.extractors.mediapipe_face import MediapipeFaceConfig
from msekit.extractors.opensmile_audio import OpenSmileConfig
from msekit.media import iter_frames, load_audio, probe

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=ROOT / "tests/fixtures/single_face.mp4")
    ap.add_argument("--audio", type=Path, default=ROOT / "tests/fixtures/speech.wav")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length for the RTF")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    args = ap.parse_args()

    rows: list[tuple[str, str, float, float | None]] = []
    info = probe(args.video)
    size = f"{info.width}x{info.height} @ {info.fps:g} fps"

    best = min((timed(lambda: sum(len(f) for f, _ in iter_frames(args.video, info)))
                for _ in range(args.repeat)), key=lambda r: r[1])
    n = best[0]
    rows.append(("decode (ffmpeg pipe)", size, 1000 * best[1] / n, None))

    ex, t_init, _ = timed(lambda: create("video", "mediapipe", MediapipeFaceConfig(max_width=None)))
    rows.append(("mediapipe init (model load)", "-", 1000 * t_init, None))
    runs = [timed(lambda: ex.extract(args.video, info)) for _ in range(args.repeat)]
    out, wall, cpu = min(runs, key=lambda r: r[1])
    t = len(out.data)
    rows.append(("mediapipe extract (decode + detect)", size, 1000 * wall / t, 1000 * cpu / t))
    rows.append(("mediapipe detect only (extract - decode)", size, 1000 * wall / t - rows[0][2], None))

    speech = load_audio(args.audio)
    reps = int(np.ceil(args.seconds * 16000 / len(speech)))
    signal = np.tile(speech, reps)[: int(args.seconds * 16000)]  # (S,) real speech, looped
    for level in ("lld", "functionals"):
        sm = create("audio", "opensmile", OpenSmileConfig(level=level))
        _, wall, cpu = min((timed(lambda sm=sm: sm.extract(signal, 16000))
                            for _ in range(args.repeat)), key=lambda r: r[1])
        rows.append((f"opensmile eGeMAPSv02 {level} (RTF)", f"{args.seconds:g} s", wall / args.seconds,
                     cpu / args.seconds))

    print(f"{'measurement':44s} {'input':22s} {'wall':>10s} {'cpu':>10s}")
    for name, what, wall, cpu in rows:
        unit = "" if "RTF" in name else " ms"
        fmt = (lambda v: f"{v:.4f}") if "RTF" in name else (lambda v: f"{v:.1f}")
        print(f"{name:44s} {what:22s} {fmt(wall) + unit:>10s} "
              f"{(fmt(cpu) + unit) if cpu is not None else '-':>10s}")
    print(f"(mediapipe per-frame numbers are per frame; best of {args.repeat} runs; {t} frames)")


if __name__ == "__main__":
    main()
