"""The fault suite: every case of issue 10, run through the installed ``msekit`` executable.

Each test asserts the exit code, that the message is one line naming the file, and that every
sample committed before the fault is still readable and identical. A full disk is a small
tmpfs where this machine lets us mount one (CI runs as root), otherwise an ENOSPC injected by
``MSEKIT_FAULT_WRITE_LIMIT`` (msekit/journal.py); ``MSEKIT_FAULTS_NO_MOUNT=1`` forces that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msekit.store import StoreReader

EXE = Path(sys.executable).parent / "msekit"
if not EXE.exists():  # pragma: no cover - an install without console scripts
    EXE = Path(shutil.which("msekit") or "msekit")
ROOT = Path(__file__).resolve().parents[2]
RAVDESS = ROOT / "data" / "ravdess"
FIXTURES = ROOT / "tests" / "fixtures"
CLIPS = sorted(RAVDESS.glob("*.mp4"))[:3]
FAST = ["--fps", "5", "-q"]


def msekit(*args: str | os.PathLike, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed executable; ``env`` adds to this process's environment."""
    full = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200", **(env or {}))
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=full,
                          timeout=timeout)


def error_line(res: subprocess.CompletedProcess, *names: str | os.PathLike) -> str:
    """The one ``error:`` line of a failed run; asserts no traceback and that it names ``names``."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def item_line(res: subprocess.CompletedProcess, name: str) -> str:
    """The one ``failed:`` line of a per-item failure naming ``name``."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("failed:") and name in ln]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _digest(s) -> str:
    h = hashlib.sha256()
    for v in (s.id, s.source, s.text, s.label, s.split, s.group, repr(s.duration), *s.words):
        h.update(v.encode("utf-8", "surrogatepass") + b"\0")
    for a in (s.token_ids, s.word_times):
        h.update(np.ascontiguousarray(a).tobytes())
    for m in sorted(s.modalities):
        x = s.modalities[m]
        for a in (x.data, x.times, x.mask):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def snapshot(path: str | os.PathLike, text_fields: bool = True) -> dict[str, str]:
    """id -> digest of everything stored for it (every committed sample, read back in full)."""
    if not Path(path).exists():
        return {}
    with StoreReader(path) as r:
        return {s.id: _digest(s) for s in r}


def assert_kept(before: dict[str, str], after: dict[str, str]) -> None:
    """Every sample committed before the fault is still there, identical."""
    lost = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not lost and not changed, f"lost {lost}, changed {changed}"


class SmallDisk:
    """A folder on a small file system whose free space the test controls.

    ``real``: a tmpfs (we are root and ``mount`` works): ``fill(leave)`` writes a filler file
    so that about ``leave`` bytes stay free. Otherwise ``fill`` returns an environment that
    makes msekit's writes fail with ENOSPC after ``leave`` bytes.
    """

    def __init__(self, path: Path, real: bool) -> None:
        self.path, self.real = path, real
        self.filler = path / "filler.bin"

    def fill(self, leave: int) -> dict[str, str]:
        self.free_up()
        if not self.real:
            return {"MSEKIT_FAULT_WRITE_LIMIT": str(max(leave, 1))}
        free = shutil.disk_usage(self.path).free
        with open(self.filler, "wb") as fh:
            fh.write(b"\0" * max(0, free - leave))
        return {}

    def free_up(self) -> None:
        self.filler.unlink(missing_ok=True)


def _mount(path: Path, options: str) -> bool:
    if os.environ.get("MSEKIT_FAULTS_NO_MOUNT") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    real = _mount(mnt, "size=16m")
    yield SmallDisk(mnt, real)
    if real:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs as root, else chmod 555."""
    d = tmp_path / "ro"
    d.mkdir()
    if _mount(d, "size=1m,ro"):
        yield d
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
    elif os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
    else:
        pytest.skip("root without mount: no folder is read-only for us")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    """A folder with three bundled RAVDESS clips (their labels are in data/ravdess/labels.csv)."""
    d = tmp_path_factory.mktemp("clips")
    for c in CLIPS:
        shutil.copy(c, d / c.name)
    return d


@pytest.fixture(scope="session")
def reference(tmp_path_factory, clips) -> Path:
    """An uninterrupted extraction of ``clips`` (what every rerun after a fault must equal)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    res = msekit("extract", clips, "--out", out, *FAST)
    assert res.returncode == 0, res.stderr
    return out


def one_clip(tmp_path: Path, k: int = 0) -> Path:
    d = tmp_path / f"in{k}"
    d.mkdir(exist_ok=True)
    shutil.copy(CLIPS[k], d / CLIPS[k].name)
    return d


def record(case: str, res: subprocess.CompletedProcess, before: int, after: int) -> None:
    """Add a row (case, exit code, message, committed samples before / after) to the table that
    ``bench/fault_table.py`` prints, when ``MSEKIT_FAULT_TABLE`` names a file."""
    target = os.environ.get("MSEKIT_FAULT_TABLE")
    if not target:
        return
    import json

    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "failed:"))]
    msg = lines[0] if lines else (res.stderr.strip().splitlines() or ["(none)"])[-1]
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"case": case, "exit": res.returncode, "message": msg,
                             "before": before, "after": after}) + "\n")
