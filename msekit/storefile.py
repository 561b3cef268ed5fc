"""Opening stores safely: the writer's journaled file, its lock, free-space checks, one-line errors.

``open_writable`` opens a store for writing through ``msekit.journal.JournaledFile`` while
holding its writer lock; ``StoreFile.commit`` makes what was written durable or rolls it back
and raises ``DiskFullError`` / ``StoreError`` in one line. ``_open`` opens a store for reading
without a lock (through the journal while a commit is in progress) and checks its schema.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import h5py

from msekit.errors import StoreError
from msekit.journal import JournaledFile, WriterLock, journal_path, recover

SCHEMA_VERSION = 1
FREE_MARGIN = 512 * 1024  # bytes kept free beyond a commit's estimate (MSEKIT_FREE_MARGIN)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(StoreError):
    """The store's file system has no room for the next commit (nothing committed is lost)."""


def disk_full(path: str | os.PathLike, committed: int, detail: str = "") -> DiskFullError:
    return DiskFullError(f"disk full writing {path}: {committed} samples committed; free space "
                         f"and rerun{detail}")


def write_error(path: str | os.PathLike, e: OSError, committed: int) -> StoreError:
    """The one-line error for a failed write (a full disk or another OS error)."""
    if e.errno in _FULL:
        return disk_full(path, committed)
    return StoreError(f"cannot write {path} ({e.strerror or e}); {committed} samples committed; "
                      "fix that and rerun")


def check_free(path: str | os.PathLike, need: int, committed: int) -> None:
    """Refuse a write of about ``need`` bytes unless that much plus the margin is free.

    Raises:
        DiskFullError: not enough free space on the store's file system.
    """
    margin = int(os.environ.get("MSEKIT_FREE_MARGIN", FREE_MARGIN))
    d = Path(path).parent
    while not d.exists() and d != d.parent:
        d = d.parent
    free = shutil.disk_usage(d).free
    if free < need + margin:
        raise disk_full(path, committed, f" (needs about {(need + margin) / 1e6:.1f} MB, "
                        f"{free / 1e6:.1f} MB free)")


class StoreFile(h5py.File):
    """A store opened for writing: ``h5py.File`` over a ``JournaledFile``, with the writer lock.

    Use ``commit()`` to make what was written durable; leaving a ``with`` block commits, or
    rolls back when the block raised. A failed write raises ``DiskFullError`` (or StoreError)
    after rolling the file back to its last commit.
    """

    def commit(self) -> None:
        """Flush and commit; on a failed write roll back and raise the one-line error."""
        self._write_and_commit(self.flush, self.abort)
        self.committed = int(self.attrs.get("n_samples", 0))

    def _write_and_commit(self, write, undo) -> None:
        """``write()`` (an OSError there is the journal's failure to report), then the journal's
        commit; a failed commit calls ``undo()`` and raises the one-line error."""
        jf = self.journal
        try:
            write()
        except OSError as e:  # h5py reports a failed flush or close; the file object knows why
            jf.failed = jf.failed or e
        try:
            jf.commit()
        except OSError as e:
            undo()
            raise write_error(self.store_path, e, self.committed) from None

    def abort(self) -> None:
        """Close without keeping anything since the last commit."""
        jf = self.journal
        if jf.failed is None:
            jf.failed = OSError(errno.ECANCELED, "aborted")  # keep the close out of the file
        try:
            if self.id.valid:
                super().close()
        except Exception:  # noqa: BLE001 - HDF5 may complain; the rollback below decides
            pass
        jf.rollback()
        self._release()

    def _release(self) -> None:
        self.journal.close()
        self.lock.release()

    def close(self) -> None:
        """Close and commit (HDF5 writes its last metadata while closing)."""
        if not self.id.valid:
            return
        try:
            self._write_and_commit(super().close, self.journal.rollback)
        finally:
            self._release()

    def __exit__(self, exc_type, *rest: object) -> None:
        if not self.id.valid:
            return
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def _lock(path: Path) -> WriterLock:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return WriterLock(path)
    except OSError as e:
        raise StoreError(f"cannot write {path} ({e.strerror or e}); choose another --out or fix "
                         "its permissions") from None


def open_writable(path: str | os.PathLike, lock: WriterLock | None = None,
                  **kwargs: Any) -> StoreFile:
    """Open an existing store for writing, holding its writer lock (taken unless given).

    A journal left by a killed writer is applied first. ``kwargs`` go to ``h5py.File``.

    Raises:
        StoreError: another writer holds the store, it cannot be written (permissions), or
            it is not a store of a schema this msekit knows.
    """
    path = Path(path)
    lock = lock or _lock(path)
    jf = None
    try:
        if journal_path(path).exists():
            recover(path)
        _open(path, "r").close()  # a store, of a schema we know
        jf = JournaledFile(path)
        f = StoreFile(jf, "r+", **kwargs)
    except OSError as e:
        if jf is not None:
            jf.close()
        lock.release()
        raise StoreError(f"cannot write {path} ({e.strerror or e}); check its permissions "
                         "or the disk") from None
    except BaseException:
        if jf is not None:
            jf.close()
        lock.release()
        raise
    f.journal, f.lock, f.store_path = jf, lock, path
    f.committed = int(f.attrs.get("n_samples", 0))
    return f


def _open(path: Path, mode: str, **kwargs: Any) -> h5py.File:
    """Open a store read-only with h5py (``kwargs`` go to h5py.File), checking that it is one.

    No lock is taken, so a store can be read while a writer works on it; during a commit (a
    journal exists) the file is read through the journal, i.e. as of the last commit.
    """
    if mode != "r":
        return open_writable(path, **kwargs)
    try:
        if journal_path(path).exists():
            f = h5py.File(JournaledFile(path, readonly=True), "r", **kwargs)
        else:
            f = h5py.File(path, "r", locking=False, **kwargs)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such store; make one with `msekit extract`") from None
    except OSError as e:
        if not Path(path).exists():
            raise StoreError(f"{path}: no such store; make one with `msekit extract`") from None
        raise StoreError(f"{path}: not a readable HDF5 store ({e.args[0] if e.args else e}); "
                         "re-extract it or restore a copy") from None
    problem = _schema_problem(path, f)
    if problem:
        f.close()
        raise StoreError(problem)
    return f


def _schema_problem(path: Path, f: h5py.File) -> str:
    """Why an open HDF5 file is not a store this msekit can read ('' when it is)."""
    if "schema_version" not in f.attrs or "samples" not in f:
        return f"{path}: an HDF5 file but not an msekit store (no schema_version)"
    version = f.attrs["schema_version"]
    if int(version) > SCHEMA_VERSION:
        return (f"{path}: schema version {version} is newer than this msekit understands "
                f"({SCHEMA_VERSION}); upgrade msekit")
    missing = [k for k in ("settings", "settings_hash", "n_samples", "modalities") if k not in f.attrs]
    if missing:
        return (f"{path}: store attributes {missing} are missing (made by another tool or "
                "damaged); re-extract it, or upgrade msekit if a newer one wrote it")
    return ""


def _stamp(path: Path) -> tuple:
    """What changes when a writer commits: the store's size and mtime, the journal's presence."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    try:
        journal = os.stat(journal_path(path)).st_ino
    except OSError:
        journal = None
    return st.st_size, st.st_mtime_ns, journal


