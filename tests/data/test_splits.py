"""Grouping and splitting (msekit.splits): groups from the group column, else the source file,
else the sample itself; an empty split is refused, in the library and by `msekit split`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from msekit.errors import MsekitError
from msekit.labels import canonical_split
from msekit.splits import group_keys, make_splits, split_store
from msekit.store import Sample, StoreReader, StoreWriter

from .conftest import NAMES

EXE = Path(sys.executable).parent / "msekit"


def _store(path: Path, n: int, groups=None, sources=None) -> Path:
    with StoreWriter(path, {"t": 0}, NAMES) as w:
        for i in range(n):
            w.add(Sample(id=f"clip_{i}", label="1.0", group=(groups or [""] * n)[i],
                         source=(sources or [""] * n)[i]))
    return path


def test_group_column_then_source_then_sample():
    keys = group_keys(["a", "b", "c", "d"], ["g", "g", "", ""], ["x.mp4", "y.mp4", "z.mp4", ""])
    assert keys[0] == keys[1] and len(set(keys)) == 4 - 1
    # clips cut from one video share its source file, so they stay together
    sources = [f"video{i // 4}.mp4" for i in range(40)]
    split = make_splits([f"ravdess_{i}" for i in range(40)], None, (0.6, 0.2, 0.2), seed=2, sources=sources)
    for v in set(sources):
        assert len({s for s, src in zip(split, sources, strict=True) if src == v}) == 1
    # nothing says which clips belong together: each is its own group (ids are never cut at "_")
    alone = make_splits([f"ravdess_{i}" for i in range(40)], None, (0.6, 0.2, 0.2), seed=2)
    assert alone.count("train") == 24 and alone.count("valid") == 8 and alone.count("test") == 8


def test_split_store_refuses_an_empty_split_and_writes_nothing(tmp_path):
    path = _store(tmp_path / "two.h5", 6, groups=["a"] * 3 + ["b"] * 3)
    with pytest.raises(MsekitError, match=r"would be empty .*2 group"):
        split_store(path, ratios="0.8,0.1,0.1")
    with StoreReader(path) as r:
        assert not any(r.column("split"))
    counts = split_store(path, ratios="0.5,0.5,0")  # no test split asked for: fine
    assert (counts["train"], counts["valid"], counts["test"]) == (3, 3, 0)


def test_split_command_exits_non_zero_on_an_empty_split(tmp_path):
    path = _store(tmp_path / "one.h5", 4, groups=["only"] * 4)
    res = subprocess.run([str(EXE), "split", str(path)], capture_output=True, text=True)
    assert res.returncode == 1 and "would be empty" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    ok = _store(tmp_path / "ten.h5", 10)
    res = subprocess.run([str(EXE), "split", str(ok), "--ratios", "0.6,0.2,0.2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert '"groups": 10' in res.stdout


def test_split_aliases_are_one_table():
    assert [canonical_split(x) for x in ("dev", "Validation", "val", "TRAIN", "testing", "")] == [
        "valid", "valid", "valid", "train", "test", ""]
    with pytest.raises(MsekitError, match="split must be one of"):
        canonical_split("eval")
