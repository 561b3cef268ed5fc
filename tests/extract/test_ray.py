"""`--engine ray`: a store built by Ray actors equals the process pool's (samples, arrays,
failures), survives an actor killed mid-run, resumes across engines, and says what is wrong.

The Python-API tests share one local Ray cluster with 2 CPUs (started here, as a notebook would);
the slow test runs the installed executable, which starts and stops its own local cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tests.extract.fakes  # noqa: F401  (registers fakeface / fakeaudio)
from msekit.errors import MsekitError
from msekit.extract import ExtractConfig, extract
from msekit.store import StoreReader
from tests.extract.test_extract import assert_same_store

if not os.environ.get("CI"):  # CI installs msekit[ray] and must run these
    pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
RAV = ROOT / "data" / "ravdess"
FAKE = ExtractConfig(face="fakeface", audio="fakeaudio", fps=5, llm="none")
FLAG_ENV = "MSEKIT_FAKE_DIE"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster with 2 CPUs; its workers see $MSEKIT_FAKE_DIE (unarmed: no file)."""
    import ray

    flag = tmp_path_factory.mktemp("flag") / "die"
    os.environ[FLAG_ENV] = str(flag)  # the raylet and its workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield flag
    ray.shutdown()
    os.environ.pop(FLAG_ENV, None)


@pytest.fixture()
def clips(tmp_path):
    """Six clips of RAVDESS, one with an awkward name, and two bad files."""
    d = tmp_path / "clips"
    d.mkdir()
    for p in sorted(RAV.glob("*.mp4"))[:5]:
        shutil.copy(p, d / p.name)
    shutil.copy(FIX / "single_face.mp4", d / "odd name, é.mp4")
    for name in ("corrupt.mp4", "empty.mp4"):
        shutil.copy(FIX / name, d / name)
    return d


def _same_failures(a: Path, b: Path) -> list[dict]:
    with StoreReader(a) as ra, StoreReader(b) as rb:
        fa, fb = ra.failures(), rb.failures()
    assert fa == fb
    return fa


def test_ray_store_equals_the_pool_store_and_resumes_across_engines(cluster, clips, tmp_path):
    pool, on_ray = tmp_path / "pool.h5", tmp_path / "ray.h5"
    sp = extract([clips], pool, FAKE, workers=2, progress=False)
    sr = extract([clips], on_ray, FAKE, workers=2, engine="ray", progress=False,
                 engine_options={"ready_timeout": 120})
    assert (sr.done, sr.failed, sr.media_seconds) == (sp.done, sp.failed, sp.media_seconds)
    assert sr.done == 6 and sr.failed == 2
    assert_same_store(pool, on_ray)
    failed = _same_failures(pool, on_ray)
    assert {(f["id"], f["stage"]) for f in failed} == {("corrupt", "probe"), ("empty", "probe")}
    # Resume: a store begun on one engine is finished on the other.
    with StoreReader(on_ray) as r:
        first = r.ids[0]
    (clips / f"{first}.mp4").rename(tmp_path / "held_back.mp4")  # make a store missing one
    part = tmp_path / "part.h5"
    extract([clips], part, FAKE, workers=2, engine="ray", progress=False)
    (tmp_path / "held_back.mp4").rename(clips / f"{first}.mp4")
    s = extract([clips], part, FAKE, workers=2, progress=False)
    assert s.skipped == 5 and s.done == 1
    with StoreReader(part) as r:
        assert sorted(r.ids) == sorted(StoreReader(pool).ids)


def test_an_actor_killed_mid_run_is_replaced_and_the_store_completes(cluster, clips, tmp_path):
    pool = tmp_path / "pool.h5"
    extract([clips], pool, FAKE, workers=2, progress=False)
    victim = sorted(p.stem for p in clips.glob("ravdess*"))[2]  # the 3rd of 6 clips
    cluster.write_text(victim)  # the actor that starts on it kills itself (SIGKILL)
    on_ray = tmp_path / "ray.h5"
    s = extract([clips], on_ray, FAKE, workers=2, engine="ray", progress=False,
                engine_options={"ready_timeout": 120})
    assert not cluster.exists(), "no actor was killed"
    assert s.done == 6 and s.failed == 2  # the two bad files only: the victim was retried
    assert_same_store(pool, on_ray)
    _same_failures(pool, on_ray)


def test_a_file_that_keeps_killing_its_actor_is_recorded_not_fatal(cluster, clips, tmp_path):
    victim = sorted(p.stem for p in clips.glob("ravdess*"))[1]
    cluster.write_text(victim)  # dies once; with retries=0 that is the file's only try
    s = extract([clips], tmp_path / "ray.h5", FAKE, workers=2, engine="ray", progress=False,
                engine_options={"retries": 0, "ready_timeout": 120})
    assert s.done == 5 and s.failed == 3
    worker = [f for f in s.failures if f["stage"] == "worker"]
    assert [f["id"] for f in worker] == [victim] and "died 1 time while" in worker[0]["reason"]
    with StoreReader(tmp_path / "ray.h5") as r:
        assert victim not in r.ids and {f["id"] for f in r.failures()} >= {victim}


def test_options_and_cluster_errors_are_one_line(cluster, clips, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(MsekitError, match=r"--ray-option bogus: unknown; use one of"):
        extract([clips], out, FAKE, engine="ray", engine_options={"bogus": 1}, progress=False)
    with pytest.raises(MsekitError, match=r"--ray-option num_cpus='two': wrong type"):
        extract([clips], out, FAKE, engine="ray", engine_options={"num_cpus": "two"},
                progress=False)
    with pytest.raises(MsekitError, match=r"need --engine ray"):
        extract([clips], out, FAKE, address="auto", progress=False)
    with pytest.raises(MsekitError, match=r"engine must be one of \['pool', 'ray'\]"):
        extract([clips], out, FAKE, engine="dask", progress=False)
    # Actors that no node can host: a clear message after ready_timeout, and no store.
    with pytest.raises(MsekitError, match=r"no Ray actor started within 3 s; the cluster has"):
        extract([clips], out, FAKE, engine="ray", progress=False,
                engine_options={"num_cpus": 64, "ready_timeout": 3})
    assert not out.exists()


def _cli(*args: str, env: dict | None = None, block_ray: bool = False):
    """The CLI in a subprocess, with the fake backends registered (and Ray hidden)."""
    pre = "sys.modules['ray'] = None; " if block_ray else ""
    code = (f"import sys; {pre}import tests.extract.fakes; from msekit.cli import main; "
            "sys.argv = ['msekit'] + sys.argv[1:]; main()")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {}),
                                                       "PYTHONPATH": str(ROOT)})


def test_without_ray_the_error_says_how_to_install_it(tmp_path):
    res = _cli("extract", str(FIX / "single_face.mp4"), "--out", str(tmp_path / "x.h5"),
               "--face", "fakeface", "--llm", "none", "--engine", "ray", block_ray=True)
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'msekit[ray]'" in lines[0], res.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_installed_executable_ray_equals_pool_on_the_real_backends(tmp_path):
    exe = Path(sys.executable).parent / "msekit"
    d = tmp_path / "clips"
    d.mkdir()
    for p in [*sorted(RAV.glob("*.mp4"))[:4], FIX / "no_face.mp4", FIX / "corrupt.mp4"]:
        shutil.copy(p, d / p.name)
    common = [str(d), "--fps", "5", "--labels", str(RAV / "labels.csv"), "--workers", "2",
              "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop(FLAG_ENV, None)
    for engine in ("pool", "ray"):
        out = tmp_path / f"{engine}.h5"
        extra = ["--ray-option", "num_cpus=1"] if engine == "ray" else []
        res = subprocess.run([str(exe), "extract", *common, "--out", str(out), "--engine", engine,
                              *extra], capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 1, res.stderr[-2000:]  # the corrupt file
        assert "1 item(s) failed" in res.stderr
    assert_same_store(tmp_path / "pool.h5", tmp_path / "ray.h5")
    failed = _same_failures(tmp_path / "pool.h5", tmp_path / "ray.h5")
    assert [f["id"] for f in failed] == ["corrupt"]
    with StoreReader(tmp_path / "ray.h5") as r:
        assert len(r) == 5 and r.settings["video"]["backend"] == "mediapipe"
    # Rerun on Ray: everything is skipped, the store is unchanged.
    res = subprocess.run([str(exe), "extract", *common, "--out", str(tmp_path / "ray.h5"),
                          "--engine", "ray"], capture_output=True, text=True, timeout=600, env=env)
    assert re.search(r"│\s+0 │\s+5 │\s+1 │", res.stdout), res.stdout  # done, skipped, failed
    assert_same_store(tmp_path / "pool.h5", tmp_path / "ray.h5")
