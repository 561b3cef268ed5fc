"""A full disk during extract, align, import, merge and export: one line, nothing committed lost,
and the rerun after freeing space completes and equals an uninterrupted run."""

from __future__ import annotations

import pickle
import shutil

import h5py
import pytest

from msekit.journal import journal_path
from tests.data.test_formats import mmsa_dict
from tests.faults.conftest import (
    CLIPS,
    FAST,
    assert_kept,
    error_line,
    msekit,
    record,
    snapshot,
)

pytestmark = pytest.mark.slow
BIG = {"MSEKIT_FREE_MARGIN": str(-10**12)}  # pass the free-space check: the write itself fails


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()
                  if p.suffix in (".journal", ".importing", ".creating", ".tmp")
                  or p.name.endswith((".importing", ".tmp")))


@pytest.mark.parametrize("where", ["checked_before_commit", "write_fails"])
def test_extract_disk_full_keeps_commits_and_resumes(small_disk, clips, reference, where):
    store = small_disk.path / "s.h5"
    assert msekit("extract", clips / CLIPS[0].name, "--out", store, *FAST).returncode == 0
    before = snapshot(store)
    assert len(before) == 1
    if where == "checked_before_commit":
        env = small_disk.fill(200_000)
    else:
        env = {**small_disk.fill(30_000), **BIG}
    res = msekit("extract", clips, "--out", store, *FAST, env=env)
    assert res.returncode == 1
    after = snapshot(store)
    line = error_line(res, f"disk full writing {store}: {len(after)} samples committed; "
                           "free space and rerun")
    assert line
    assert_kept(before, after)
    record(f"disk full: extract ({where})", res, len(before), len(after))
    assert not journal_path(store).exists()
    small_disk.free_up()
    res = msekit("extract", clips, "--out", store, *FAST)
    assert res.returncode == 0, res.stderr
    assert snapshot(store) == snapshot(reference)


@pytest.mark.parametrize("env_extra", [{}, BIG], ids=["checked", "write_fails"])
def test_align_disk_full_leaves_store_as_it_was(small_disk, reference, env_extra):
    store = small_disk.path / "s.h5"
    shutil.copy(reference, store)
    before = snapshot(store)
    res = msekit("align", store, "--mode", "none", env={**small_disk.fill(20_000), **env_extra})
    assert res.returncode == 1
    error_line(res, f"disk full writing {store}: {len(before)} samples committed")
    assert snapshot(store) == before
    record(f"disk full: align ({'write fails' if env_extra else 'checked'})", res, len(before),
           len(snapshot(store)))
    with h5py.File(store, "r") as f:
        assert "none" not in f.get("views", {})
    small_disk.free_up()
    assert msekit("align", store, "--mode", "none").returncode == 0
    with h5py.File(store, "r") as f:
        assert f["views/none"].attrs["n_samples"] == len(before)


def test_import_disk_full_writes_nothing(small_disk, tmp_path):
    pkl = tmp_path / "unaligned_39.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(mmsa_dict(n=(60, 20, 20), ta=40, tv=30, da=30, dv=20), fh, protocol=4)
    out = small_disk.path / "imported.h5"
    res = msekit("import", pkl, "--out", out, env=small_disk.fill(40_000))
    assert res.returncode == 1
    error_line(res, f"disk full writing {out}")
    assert not out.exists() and not _leftovers(small_disk.path)
    record("disk full: import (new store)", res, 0, 0)
    small_disk.free_up()
    assert msekit("import", pkl, "--out", out).returncode == 0
    assert len(snapshot(out)) == 100


def test_merge_disk_full_writes_nothing(small_disk, reference, tmp_path):
    shard = tmp_path / "a.h5"
    shutil.copy(reference, shard)
    out = small_disk.path / "merged.h5"
    res = msekit("merge", shard, "--out", out, env={**small_disk.fill(20_000), **BIG})
    assert res.returncode == 1
    error_line(res, f"disk full writing {out}")
    assert not out.exists() and not _leftovers(small_disk.path)
    assert snapshot(shard) == snapshot(reference)
    record("disk full: merge (inputs kept)", res, len(snapshot(reference)), len(snapshot(shard)))
    small_disk.free_up()
    assert msekit("merge", shard, "--out", out).returncode == 0
    assert snapshot(out) == snapshot(reference)


def test_export_disk_full_writes_nothing(small_disk, tmp_path):
    if not small_disk.real:
        pytest.skip("export writes a plain pickle: needs a real small file system")
    pkl = tmp_path / "unaligned_39.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(mmsa_dict(n=(60, 20, 20), ta=40, tv=30, da=30, dv=20), fh, protocol=4)
    store = tmp_path / "s.h5"
    assert msekit("import", pkl, "--out", store).returncode == 0
    out = small_disk.path / "out.pkl"
    small_disk.fill(20_000)
    res = msekit("export", store, "--out", out)
    assert res.returncode == 1
    error_line(res, str(out), "disk full")
    assert not out.exists() and not _leftovers(small_disk.path)
    n = len(snapshot(store))
    record("disk full: export (store kept)", res, n, n)
