"""Benchmark `msekit extract --engine ray` against the process pool (run by hand, never a test).

1. Wall time of the whole command on the bundled clips (real backends, start-up included):
   A = the process pool with 2 workers, B = `--engine ray --workers 2` (msekit starts and stops a
   local 2-CPU cluster), C = `--engine ray --address ADDR` on a 2-CPU cluster already running.
   The machine is shared and loaded by others: runs are interleaved A B C A B C ... and the
   median of each is reported, with the fixed cost of each (a rerun that finds every sample
   done: start-up and shut-down alone). Target: B and C <= 1.1x A.
2. Bit-equality of the stores (samples, order, every array, failures) of A, B and C.
3. The driver's peak RSS with 100 ... 10,000 queued files on a near-zero-cost backend
   (bench/fast_fakes.py), for both engines. Target: flat within 10%.
4. With --node-loss: a node of a (simulated, one-machine) cluster is killed mid-run; the store
   must still complete and equal the pool's.

    .venv/bin/python bench/bench_ray.py [--clips 60] [--rounds 2] [--fps F] [--files 100,1000,10000] [--node-loss]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}


def stores_equal(a: Path, b: Path) -> str:
    """'' when the stores hold the same samples in the same order, bit for bit, and the same
    failures; else the first difference."""
    from msekit.store import StoreReader

    if not (a.is_file() and b.is_file()):
        return "a store is missing"
    with StoreReader(a) as ra, StoreReader(b) as rb:
        if ra.ids != rb.ids:
            return f"ids differ: {len(ra.ids)} vs {len(rb.ids)}"
        if ra.settings_hash != rb.settings_hash:
            return "settings differ"
        if ra.failures() != rb.failures():
            return "failures differ"
        for sid in ra.ids:
            x, y = ra.sample(sid), rb.sample(sid)
            for f in ("text", "label", "split", "group", "source", "duration", "words"):
                if getattr(x, f) != getattr(y, f):
                    return f"{sid}: {f} differs"
            if not np.array_equal(x.token_ids, y.token_ids):
                return f"{sid}: token ids differ"
            for m in ra.modalities:
                for f in ("data", "times", "mask"):
                    u, v = getattr(x.modalities[m], f), getattr(y.modalities[m], f)
                    if u.dtype != v.dtype or u.tobytes() != v.tobytes():
                        return f"{sid}: {m} {f} differs"
    return ""


class RunningCluster:
    """A 2-CPU Ray cluster kept up by a helper process until ``close`` (no `ray stop`, which
    would stop every Ray cluster on this shared machine). Its workers run at the helper's
    niceness, as msekit's own local cluster's do (Ray's default adds 15)."""

    def __init__(self) -> None:
        code = ("import sys, ray; ray.init(num_cpus=2, include_dashboard=False, "
                "_system_config={'worker_niceness': 0}); "
                "print(ray.get_runtime_context().gcs_address, flush=True); sys.stdin.read(); "
                "ray.shutdown()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=ENV)
        self.address = self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def wall_times(args: argparse.Namespace, tmp: Path) -> None:
    clips = tmp / "clips"
    clips.mkdir()
    for p in sorted((ROOT / "data" / "ravdess").glob("*.mp4"))[: args.clips]:
        (clips / p.name).symlink_to(p)
    cluster = RunningCluster()
    variants = {"A pool, 2 workers": [],
                "B ray, 2 actors, local cluster started by msekit": ["--engine", "ray"],
                "C ray, 2 actors, running cluster (--address)":
                    ["--engine", "ray", "--address", cluster.address]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for r in range(args.rounds):
            for name, extra in variants.items():
                out = tmp / f"{name[0]}{r}.h5"
                cmd = [sys.executable, "-m", "msekit", "extract", str(clips), "--out", str(out),
                       "--workers", "2", "--quiet", *extra,
                       *(["--fps", str(args.fps)] if args.fps else [])]
                t0 = time.perf_counter()
                env = {**ENV, "RAY_AUTH_MODE": "token"} if "--address" in extra else ENV
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL).returncode
                times[name].append(time.perf_counter() - t0)
                print(f"  round {r + 1} {name}: {times[name][-1]:.1f} s (exit {rc})", flush=True)
        # Start-up and shut-down alone: a rerun that finds every sample done.
        fixed = {}
        for name, extra in variants.items():
            env = {**ENV, "RAY_AUTH_MODE": "token"} if "--address" in extra else ENV
            cmd = [sys.executable, "-m", "msekit", "extract", str(clips), "--out",
                   str(tmp / f"{name[0]}0.h5"), "--workers", "2", "--quiet", *extra,
                   *(["--fps", str(args.fps)] if args.fps else [])]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            fixed[name] = time.perf_counter() - t0
    finally:
        cluster.close()
    base = statistics.median(times["A pool, 2 workers"])
    rate = f"{args.fps:g} fps" if args.fps else "native fps"
    print(f"\n{args.clips} clips at {rate}, median of {args.rounds} interleaved rounds:")
    for name, ts in times.items():
        print(f"  {name:50s} {statistics.median(ts):6.1f} s  x{statistics.median(ts) / base:.2f}"
              f"  (runs: {', '.join(f'{t:.1f}' for t in ts)}; start-up + shut-down alone "
              f"{fixed[name]:.1f} s)")
    for other in ("B", "C"):
        diff = stores_equal(tmp / "A0.h5", tmp / f"{other}0.h5")
        print(f"  store A == store {other}, bit for bit: {'yes' if not diff else 'NO: ' + diff}")


def driver_rss(args: argparse.Namespace, tmp: Path) -> None:
    sizes = [int(n) for n in args.files.split(",")]
    folder = tmp / "null"
    folder.mkdir()
    print("\ndriver peak RSS (MB), nullface backend, 2 workers / actors:")
    print(f"  {'files':>7s} {'pool':>8s} {'ray':>8s}   (wall s: pool, ray)")
    made = 0
    for n in sizes:
        for i in range(made, n):
            (folder / f"f{i:06d}.mp4").touch()
        made = max(made, n)
        got = {}
        for engine in ("pool", "ray"):
            out = tmp / f"null-{engine}-{n}.h5"
            code = f"import fast_fakes; fast_fakes.drive({engine!r}, {str(folder)!r}, {str(out)!r}, 2)"
            res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV,
                                 capture_output=True, text=True)
            got[engine] = json.loads(res.stdout.strip().splitlines()[-1])
            assert got[engine]["done"] == n, res.stderr[-2000:]
        diff = stores_equal(tmp / f"null-pool-{n}.h5", tmp / f"null-ray-{n}.h5")
        print(f"  {n:7d} {got['pool']['rss_mb']:8.1f} {got['ray']['rss_mb']:8.1f}   "
              f"({got['pool']['wall_s']:.0f}, {got['ray']['wall_s']:.0f}; stores equal: "
              f"{'yes' if not diff else 'NO: ' + diff})", flush=True)


def node_loss(tmp: Path, clips: int = 8) -> None:
    """A node lost mid-run (timed, hence here and not in the tests): a cluster of a head with
    no CPUs (the driver's) and two 1-CPU nodes; the fake face backend takes 0.5 s a file; 3 s
    in, one node is killed and a fresh one joins. The store must still equal the pool's."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(ROOT))
    import tests.extract.fakes  # noqa: F401
    from msekit.extract import ExtractConfig, extract

    folder = tmp / "loss"
    folder.mkdir()
    for p in sorted((ROOT / "data" / "ravdess").glob("*.mp4"))[:clips]:
        (folder / p.name).symlink_to(p)
    os.environ["MSEKIT_FAKE_SLOW"] = "0.5"
    cfg = ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, llm="none")
    extract([folder], tmp / "loss-pool.h5", cfg, workers=2, progress=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)

    def chaos() -> None:
        time.sleep(3)
        cluster.remove_node(nodes[0], allow_graceful=False)
        cluster.add_node(num_cpus=1)

    threading.Thread(target=chaos, daemon=True).start()
    try:
        s = extract([folder], tmp / "loss-ray.h5", cfg, workers=2, engine="ray", progress=False)
    finally:
        ray.shutdown()
        cluster.shutdown()
    diff = stores_equal(tmp / "loss-pool.h5", tmp / "loss-ray.h5")
    print(f"\nnode lost mid-run: {s.done}/{clips} done, {s.failed} failed in {s.wall_seconds:.0f} s; "
          f"store equals the pool's: {'yes' if not diff else 'NO: ' + diff}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=60, help="bundled RAVDESS clips to use")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds A B C")
    ap.add_argument("--fps", type=float, default=None, help="analysis rate (default: native)")
    ap.add_argument("--files", default="100,1000,10000", help="queued-file counts for the RSS")
    ap.add_argument("--skip-wall", action="store_true", help="no wall-time part")
    ap.add_argument("--skip-rss", action="store_true", help="no driver-RSS part")
    ap.add_argument("--node-loss", action="store_true", help="also lose a node mid-run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_wall:
            wall_times(args, Path(tmp))
        if not args.skip_rss:
            driver_rss(args, Path(tmp))
        if args.node_loss:
            node_loss(Path(tmp))


if __name__ == "__main__":
    main()
