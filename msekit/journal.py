"""Crash- and disk-full-safe writes to an HDF5 store: an undo journal under h5py.

HDF5 updates its metadata in place, so a write that fails half-way (a full disk) or a process
killed during a flush can leave a file that no longer opens. ``JournaledFile`` is the file
object h5py writes through (``h5py.File(fileobj)``): before the first overwrite of any byte that
existed at the last commit point, it appends that page's old content to ``<store>.journal``.

- ``commit()`` (after ``h5py.File.flush``) fsyncs the store and deletes the journal: that
  deletion is the commit point.
- On a failed write (ENOSPC, EIO, ...) the file object stops writing to disk and keeps what
  HDF5 writes in memory, so HDF5 can still finish and close; ``rollback()`` then copies the old
  pages back and truncates the file to its committed length. No extra space is needed for that.
- A journal found when a store is opened belongs to a writer that died mid-commit: a writer
  applies it (``recover``); a reader reads through it (``JournaledFile(path, readonly=True)``
  serves the old pages), so it sees the last commit without changing the file.

Journal layout: ``MAGIC`` (8 bytes) + committed length (u64), then records of offset (u64),
length (u32), crc32 (u32) and the old bytes. A record cut short (the journal's own disk filled
up, or a kill) is ignored: its page was never overwritten, because the record is written first.

``MSEKIT_FAULT_WRITE_LIMIT=N`` (bytes) makes writes fail with ENOSPC once a process has written
N bytes through journaled files: the fault tests use it where no small file system can be
mounted.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

MAGIC = b"MSEKJNL1"
PAGE = 4096
_HEAD = struct.Struct("<8sQ")
_REC = struct.Struct("<QII")
_written = [0]  # bytes written by this process (for MSEKIT_FAULT_WRITE_LIMIT)


def journal_path(path: str | os.PathLike) -> Path:
    """The journal file of a store."""
    p = Path(path)
    return p.with_name(p.name + ".journal")


def _records(raw: bytes, pos: int, pages: dict[int, bytes]) -> int:
    """Add the complete records of ``raw`` from ``pos`` to ``pages``; the end of the last one."""
    while pos + _REC.size <= len(raw):
        off, n, crc = _REC.unpack_from(raw, pos)
        data = raw[pos + _REC.size: pos + _REC.size + n]
        if len(data) != n or zlib.crc32(data) != crc:
            break
        pages.setdefault(off, data)
        pos += _REC.size + n
    return pos


def read_journal(path: str | os.PathLike) -> tuple[int, dict[int, bytes]] | None:
    """The committed length and the old pages {offset: bytes} of a store's journal, or None."""
    try:
        raw = journal_path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < _HEAD.size or raw[:8] != MAGIC:
        return None  # the header itself never reached the disk: nothing was overwritten
    pages: dict[int, bytes] = {}
    _records(raw, _HEAD.size, pages)
    return _HEAD.unpack_from(raw)[1], pages


def recover(path: str | os.PathLike) -> bool:
    """Undo a commit that a dead writer left half-done; True when there was one."""
    got = read_journal(path)
    jp = journal_path(path)
    if got is None:
        jp.unlink(missing_ok=True)
        return False
    base, pages = got
    fd = os.open(path, os.O_RDWR)
    try:
        for off, data in pages.items():
            os.pwrite(fd, data, off)
        os.ftruncate(fd, base)
        os.fsync(fd)
    finally:
        os.close(fd)
    jp.unlink(missing_ok=True)
    return True


class JournaledFile:
    """A file object for ``h5py.File`` that journals overwrites and survives failed writes.

    Args:
        path: the HDF5 file (created empty when missing and not ``readonly``).
        readonly: serve the pages of a journal left by a writer (the last committed state)
            and never write.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.fd = os.open(self.path, os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT, 0o644)
        self.pos = 0
        self.failed: OSError | None = None
        self._overlay: list[tuple[int, bytes]] = []  # writes kept in memory after a failure
        self._size: int | None = None  # file size as HDF5 sees it after a failure
        self._jfd: int | None = None
        self._limit = int(os.environ.get("MSEKIT_FAULT_WRITE_LIMIT", "0") or 0)
        if readonly:
            self._open_journal()
        else:
            self._epoch()

    def _open_journal(self) -> None:
        """Reader: follow the journal of a commit in progress (the old pages win)."""
        self.base, self._pages, self._jraw = os.fstat(self.fd).st_size, {}, b""
        try:
            self._jfd = os.open(journal_path(self.path), os.O_RDONLY)
        except FileNotFoundError:
            return
        self._jpos = 0
        self._refresh()

    def _refresh(self) -> None:
        size = os.fstat(self._jfd).st_size
        if size == len(self._jraw):
            return
        self._jraw = os.pread(self._jfd, size, 0)
        if len(self._jraw) >= _HEAD.size and self._jraw[:8] == MAGIC:
            self.base = _HEAD.unpack_from(self._jraw)[1]
            self._jpos = _records(self._jraw, max(self._jpos, _HEAD.size), self._pages)

    def _epoch(self) -> None:
        self.base = os.fstat(self.fd).st_size
        self._pages: dict[int, bytes] = {}

    # -- the file-object protocol h5py uses ---------------------------------------------------

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = self._length() + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _length(self) -> int:
        if self.readonly and self._jfd is not None:
            return self.base
        disk = os.fstat(self.fd).st_size
        if self._size is not None:
            return self._size
        return max([disk] + [o + len(b) for o, b in self._overlay])

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = len(view)
        a = self.pos
        data = bytearray(os.pread(self.fd, n, a))
        if self.readonly:
            if self._jfd is not None:
                self._refresh()
            end = min(a + n, self.base) if self._jfd is not None else a + len(data)
            data = data[: max(0, end - a)]
            for off in range(a - a % PAGE, a + len(data), PAGE):
                old = self._pages.get(off)
                if old is not None:
                    lo, hi = max(a, off), min(a + len(data), off + len(old))
                    data[lo - a:hi - a] = old[lo - off:hi - off]
        for off, b in self._overlay:  # later writes win: apply in order
            lo, hi = max(a, off), min(a + n, off + len(b))
            if lo < hi:
                if hi - a > len(data):
                    data.extend(bytes(hi - a - len(data)))
                data[lo - a:hi - a] = b[lo - off:hi - off]
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(max(0, n if n >= 0 else self._length() - self.pos))
        got = self.readinto(buf)
        return bytes(buf[:got])

    def write(self, b) -> int:
        data = bytes(b)
        if self.readonly:
            raise OSError(errno.EBADF, f"{self.path} is open read-only")
        if self.failed is None:
            try:
                self._save(self.pos, self.pos + len(data))
                self._pwrite(data, self.pos)
            except OSError as e:
                self.failed = e
        if self.failed is not None:  # keep HDF5 consistent in memory; rollback() undoes it all
            self._overlay.append((self.pos, data))
        self.pos += len(data)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.readonly:
            raise OSError(errno.EBADF, f"{self.path} is open read-only")
        if self.failed is None:
            try:
                self._save(size, self.base)
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.failed = e
        if self.failed is not None:
            self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes go straight to the OS; ``commit`` makes them durable."""

    # -- journal -------------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        """The injected disk-full fault (MSEKIT_FAULT_WRITE_LIMIT): ENOSPC past the limit."""
        if self._limit:
            _written[0] += n
            if _written[0] > self._limit:
                raise OSError(errno.ENOSPC, "No space left on device (MSEKIT_FAULT_WRITE_LIMIT)")

    def _pwrite(self, data: bytes, offset: int) -> None:
        self._count(len(data))
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def _save(self, a: int, b: int) -> None:
        """Journal the old content of the committed pages in [a, b) before they change."""
        b = min(b, self.base)
        for off in range(a - a % PAGE, b, PAGE):
            if off in self._pages:
                continue
            old = os.pread(self.fd, min(PAGE, self.base - off), off)
            if self._jfd is None:
                self._jfd = os.open(journal_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                    0o644)
                self._jwrite(_HEAD.pack(MAGIC, self.base))
            self._jwrite(_REC.pack(off, len(old), zlib.crc32(old)) + old)
            self._pages[off] = old

    def _jwrite(self, data: bytes) -> None:
        self._count(len(data))
        view = memoryview(data)
        while len(view):
            view = view[os.write(self._jfd, view):]

    def commit(self) -> None:
        """Make everything written so far the committed state (call after ``h5py`` flush).

        Raises:
            OSError: a write failed since the last commit (call ``rollback``).
        """
        if self.failed is not None:
            raise self.failed
        try:
            os.fsync(self.fd)
        except OSError as e:
            self.failed = e
            raise
        if self._jfd is not None:
            os.close(self._jfd)
            self._jfd = None
            journal_path(self.path).unlink(missing_ok=True)
        self._epoch()

    def rollback(self) -> None:
        """Restore the file as it was at the last commit (needs no free space)."""
        if self._jfd is not None:
            os.close(self._jfd)
            self._jfd = None
        for off, old in self._pages.items():
            os.pwrite(self.fd, old, off)
        os.ftruncate(self.fd, self.base)
        os.fsync(self.fd)
        journal_path(self.path).unlink(missing_ok=True)
        self.failed, self._overlay, self._size = None, [], None
        self._epoch()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_jfd", None) is not None:
            os.close(self._jfd)
            self._jfd = None
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1


class WriterLock:
    """One writer per store: an exclusive ``flock`` on ``<store>.lock``, which holds the pid.

    The lock dies with its process, so a killed writer never blocks the rerun; the small
    ``.lock`` file stays beside the store.

    Raises:
        StoreError: another process holds the lock (its pid is named).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import fcntl

        from msekit.errors import StoreError

        p = Path(path)
        self.path = p.with_name(p.name + ".lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = -1
            raise StoreError(f"{p} is being written by process {pid}; wait for it to finish "
                             "(or stop it) and rerun; readers can open the store meanwhile") from None
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock still holds, only the pid is not shown to others

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
