"""Face cost and face-found rate of the mediapipe backend, with and without the full-range detector.

For each clip, two extractors: ``detector=none`` (MediaPipe's own short-range detection, msekit
before the detector) and ``detector=full_range`` (the default: BlazeFace full range, crops for
small faces, one face track per clip). Each clip is extracted ``--repeat`` times after a warm-up;
the figures are the best (least disturbed) run: wall and CPU ms per frame (CPU = this process's
threads, decoding in ffmpeg not included), and the share of frames with a face.

Targets (issue 14): per-frame cost on the wide composites <= 3x the close-up's; close-ups no
slower than without the detector; the wide composites' face found in >= 95% of frames.

Usage:
    .venv/bin/python bench/bench_faces.py [--repeat 3] [--clips a.mp4 b.mp4 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from msekit.extractors import create
from msekit.extractors.mediapipe_face import MediapipeFaceConfig
from msekit.media import probe

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ["tests/fixtures/single_face.mp4", "data/ravdess/ravdess_03-01-01-01-01-01-05.mp4",
         "tests/fixtures/wide_face.mp4", "tests/fixtures/wide_small_face.mp4",
         "tests/fixtures/wide_two_faces.mp4"]


def measure(extractor, path: Path, repeat: int) -> dict:
    """Best wall / CPU ms per frame over ``repeat`` runs (after one warm-up) and the face rate."""
    info = probe(path)
    m = extractor.extract(path, info)  # warm-up: page cache, MediaPipe graph start
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        m = extractor.extract(path, info)
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    n = max(1, len(m.data))
    return {"frames": len(m.data), "size": f"{info.width}x{info.height}",
            "wall_ms": 1000 * best_wall / n, "cpu_ms": 1000 * best_cpu / n,
            "found": float(m.mask.mean()) if len(m.mask) else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clips", nargs="*", type=Path, default=[ROOT / c for c in CLIPS])
    args = ap.parse_args()

    modes = {"none": create("video", "mediapipe", MediapipeFaceConfig(detector="none")),
             "full_range": create("video", "mediapipe", MediapipeFaceConfig())}
    rows = {}
    print(f"{'clip':<48} {'size':>9} {'mode':>10} {'wall ms/f':>9} {'cpu ms/f':>9} {'found':>6}")
    for clip in args.clips:
        for mode, ex in modes.items():
            r = rows[(clip.name, mode)] = measure(ex, clip, args.repeat)
            print(f"{clip.name:<48} {r['size']:>9} {mode:>10} {r['wall_ms']:9.1f} {r['cpu_ms']:9.1f} "
                  f"{r['found']:6.2f}")
    close = rows.get(("single_face.mp4", "full_range"))
    today = rows.get(("single_face.mp4", "none"))
    if close and today:
        print(f"\nclose-up, detector / none: wall {close['wall_ms'] / today['wall_ms']:.2f}x, "
              f"cpu {close['cpu_ms'] / today['cpu_ms']:.2f}x (target <= 1)")
        for (name, mode), r in rows.items():
            if name.startswith("wide") and mode == "full_range":
                print(f"{name}: wide / close-up cost: wall {r['wall_ms'] / close['wall_ms']:.2f}x, "
                      f"cpu {r['cpu_ms'] / close['cpu_ms']:.2f}x (target <= 3); face found "
                      f"{r['found']:.0%} (without the detector "
                      f"{rows[(name, 'none')]['found']:.0%})")


if __name__ == "__main__":
    main()
