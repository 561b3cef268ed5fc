"""Readers while a writer works, a second writer, and kill -9 in the middle of a commit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from msekit.journal import journal_path
from msekit.store import StoreReader
from tests.faults.conftest import FAST, assert_kept, error_line, msekit, record, snapshot

# Opens a store for writing, writes one more sample and flushes it (on disk, journaled, but not
# committed), says "ready" and waits; then commits ("commit") or kills itself ("kill").
HOLD = r"""
import os, sys
from msekit.store import StoreReader, StoreWriter
path, then = sys.argv[1], sys.argv[2]
with StoreReader(path) as r:
    settings, names, sample = r.settings, {m: r.feature_names(m) for m in r.modalities}, r.sample(0)
w = StoreWriter(path, settings, names)
sample.id = "zz_late"
w._write_rows([sample])
w.f.flush()
print("ready", flush=True)
sys.stdin.readline()
if then == "kill":
    os.kill(os.getpid(), 9)
w.f.commit()
w.close()
print("done", flush=True)
"""


def _hold(store, then):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(store), then], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert p.stdout.readline().strip() == "ready"
    return p


def _inspected(store) -> int:
    res = msekit("inspect", store, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["samples"]


def test_readers_see_commits_during_a_write_and_a_second_writer_is_named(tmp_path, clips, reference):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    before = snapshot(store)
    p = _hold(store, "commit")
    try:
        assert journal_path(store).exists()  # a commit is in progress
        assert _inspected(store) == len(before)
        assert snapshot(store) == before  # read in full, through the journal
        res = msekit("extract", clips, "--out", store, *FAST)
        assert res.returncode == 1
        error_line(res, f"{store} is being written by process {p.pid}")
        record("second writer during a commit", res, len(before), len(snapshot(store)))
        res = msekit("inspect", store, "--json")
        record("inspect during a commit (reads the last commit)", res, len(before),
               json.loads(res.stdout)["samples"])
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(60) == 0
    after = snapshot(store)
    assert_kept(before, after)
    assert set(after) - set(before) == {"zz_late"} and _inspected(store) == len(before) + 1


def test_kill_9_in_the_middle_of_a_commit_is_undone(tmp_path, clips, reference):
    store = tmp_path / "s.h5"
    shutil.copy(reference, store)
    before = snapshot(store)
    p = _hold(store, "kill")
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(60) == -signal.SIGKILL
    assert journal_path(store).exists()
    assert _inspected(store) == len(before)
    assert snapshot(store) == before
    res = msekit("extract", clips, "--out", store, *FAST)  # the next writer applies the journal
    assert res.returncode == 0, res.stderr
    record("kill -9 in the middle of a commit, then rerun", res, len(before), len(snapshot(store)))
    assert not journal_path(store).exists()
    assert snapshot(store) == snapshot(reference)


@pytest.mark.slow
def test_kill_9_during_extract_then_resume_equals_uninterrupted(tmp_path, clips, reference):
    store = tmp_path / "s.h5"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    from tests.faults.conftest import EXE

    p = subprocess.Popen([str(EXE), "extract", str(clips), "--out", str(store), *FAST],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.monotonic() + 240  # a guard against a hang, not a measurement
    while p.poll() is None and time.monotonic() < deadline:
        if store.exists():
            try:
                with StoreReader(store) as r:  # lock-free, while extract writes
                    committed = len(r)
            except Exception:  # noqa: BLE001 - the store may not be complete yet
                committed = 0
        if committed >= 1:
            break
        time.sleep(0.05)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()
    before = snapshot(store)
    res = msekit("extract", clips, "--out", store, *FAST)
    assert res.returncode == 0, res.stderr
    after = snapshot(store)
    assert_kept(before, after)
    assert after == snapshot(reference)
    record("kill -9 during extract, then rerun", res, len(before), len(after))
