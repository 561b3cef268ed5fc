"""Benchmark the full extraction (run by hand, never a test).

Measures the real-time factor (wall seconds / media seconds) of `msekit extract` at the videos'
native frame rate with 1 and 2 workers on the bundled clips, and the peak RSS of the whole process
tree on a 10-minute video made by looping a sample clip with ffmpeg (-stream_loop). The wall time
is the whole command, start-up included; the fixed start-up (imports, tokenizer, workers loading
their models) is also shown on its own, as the time of a rerun that finds every sample done.
``--fps`` adds runs at a lower analysis rate. Targets: RTF <= 0.15 with 2 workers; peak RSS < 1 GB.

    .venv/bin/python bench/bench_extract.py [--clips 60] [--minutes 10] [--fps 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def run_tree(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of it and its children, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    return time.perf_counter() - t0, peak / 2**20, proc.returncode


def media_seconds(paths: list[Path]) -> float:
    from msekit.media import probe

    return sum(probe(p).duration for p in paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=60, help="bundled RAVDESS clips to use")
    ap.add_argument("--fps", type=float, default=None, help="also run at this analysis rate")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    args = ap.parse_args()
    msekit = [sys.executable, "-m", "msekit"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = tmp / "clips"
        clips.mkdir()
        for p in sorted((ROOT / "data" / "ravdess").glob("*.mp4"))[: args.clips]:
            (clips / p.name).symlink_to(p)
        secs = media_seconds(sorted(clips.glob("*.mp4")))
        runs = [(w, None) for w in (1, 2)] + ([(2, args.fps)] if args.fps else [])
        for workers, fps in runs:
            out = str(tmp / f"w{workers}-{fps}.h5")
            cmd = [*msekit, "extract", str(clips), "--out", out, "--workers", str(workers),
                   "--quiet", *(["--fps", str(fps)] if fps else [])]
            wall, rss, rc = run_tree(cmd)
            rate = f" at {fps:g} fps" if fps else ""
            rows.append((f"{args.clips} clips, {workers} worker(s){rate}", secs, wall, rss, rc))
            if fps is None:
                wall, rss, rc = run_tree(cmd)  # every sample done: start-up and shutdown alone
                rows.append((f"  start-up alone, {workers} w.", secs, wall, rss, rc))
        src = ROOT / "tests" / "fixtures" / "single_face.mp4"
        long = tmp / "long.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "-1", "-i", str(src), "-t",
                        str(args.minutes * 60), "-c", "copy", str(long)], check=True)
        secs = media_seconds([long])
        wall, rss, rc = run_tree([*msekit, "extract", str(long), "--out", str(tmp / "long.h5"),
                                  "--workers", "1", "--quiet"])
        rows.append((f"{args.minutes:g}-min video, 1 worker", secs, wall, rss, rc))
    print(f"{'run':<28} {'media s':>8} {'wall s':>8} {'RTF':>6} {'x rt':>6} {'peak RSS MB':>12} rc")
    for name, secs, wall, rss, rc in rows:
        print(f"{name:<28} {secs:8.1f} {wall:8.1f} {wall / secs:6.3f} {secs / wall:6.2f} "
              f"{rss:12.0f} {rc}")
    print("targets: RTF <= 0.15 with 2 workers; peak RSS < 1024 MB")


if __name__ == "__main__":
    main()
