"""Low-level I/O of the training loader: padded-batch reads, shared batch buffers, malloc tuning.

``msekit.dataset`` reads a packed view (uncompressed, contiguous) with one ``os.preadv`` per
sample and modality straight into a padded batch tensor (``read_packed``), and other stores
through h5py (``read_h5``); these are the pieces that know byte offsets and rows, not stores.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

import h5py
import numpy as np
import torch

from msekit.errors import MsekitError

_MALLOC_TUNED = False


def empty_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker it is allocated in shared memory,
    as torch's default_collate does, so that handing the batch to the main process copies nothing.

    Examples:
        >>> empty_batch((2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.UntypedStorage._new_shared(4 * math.prod(shape))
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


def pread_into(fd: int, arr: np.ndarray, pos: int) -> None:
    """Fill the contiguous array ``arr`` with the bytes of ``fd`` from offset ``pos``.

    Raises:
        MsekitError: the file ends before ``arr`` is full (a truncated store).
    """
    done = os.preadv(fd, [arr], pos)
    if done == arr.nbytes:
        return
    mv = memoryview(arr).cast("B")
    while done < len(mv):
        k = os.preadv(fd, [mv[done:]], pos + done)
        if k <= 0:
            raise MsekitError(f"store file ended early at byte {pos + done}; it is truncated")
        done += k


def _file_order(lengths: np.ndarray, offsets: np.ndarray, out: np.ndarray):
    """(b, n, o) of every non-empty sample in file order, once its padding ``out[b, n:]`` is zeroed."""
    T = out.shape[1]
    for b in np.argsort(offsets, kind="stable").tolist():
        n, o = int(lengths[b]), int(offsets[b])
        if n < T:
            out[b, n:] = 0.0
        if n:
            yield b, n, o


def read_packed(fd: int, out: np.ndarray, valid: np.ndarray, lengths: np.ndarray, offsets: np.ndarray,
                data_pos: int, mask_pos: int | None) -> None:
    """Read samples' rows of a contiguous float32 (N, D) array into a zero-padded batch.

    Args:
        fd: the open file.
        out: (B, T, D) float32 batch to fill; row ``n`` on of sample ``b`` is set to 0.
        valid: (B, T) uint8, filled from the (N,) uint8 mask array when ``mask_pos`` is set.
        lengths: (B,) rows per sample (at most T).
        offsets: (B,) first row of each sample in the array.
        data_pos: byte offset of the data array in the file.
        mask_pos: byte offset of the mask array, or None to leave ``valid`` alone.
    """
    rowbytes = out.shape[2] * 4
    for b, n, o in _file_order(lengths, offsets, out):
        pread_into(fd, out[b, :n], data_pos + o * rowbytes)
        if mask_pos is not None:
            pread_into(fd, valid[b, :n], mask_pos + o)


def read_h5(group: h5py.Group, out: np.ndarray, valid: np.ndarray, lengths: np.ndarray,
            offsets: np.ndarray) -> None:
    """As ``read_packed`` for a (possibly chunked, compressed) group with ``data`` and ``mask``
    datasets, read through h5py; non-finite values become 0."""
    data, mask = group["data"], group["mask"]
    for b, n, o in _file_order(lengths, offsets, out):
        out[b, :n] = np.nan_to_num(data[o:o + n], nan=0.0, posinf=0.0, neginf=0.0)
        valid[b, :n] = mask[o:o + n]


def tune_malloc() -> bool:
    """Make glibc keep freed batch buffers for reuse instead of unmapping them.

    A padded MOSEI batch of 32 is about 6 MB. glibc serves blocks above its mmap threshold with
    a fresh mmap and unmaps them on free, so every batch paid page faults plus the kernel's
    zeroing of every page: measured here, that halved the loader's throughput. Raising the mmap
    threshold to 64 MB and the trim threshold to 256 MB keeps the memory in
    the heap; peak RSS grows by at most a few batches. Called once per process (main and each
    DataLoader worker) on first read; a no-op off glibc.

    Returns:
        Whether the settings were applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    _MALLOC_TUNED = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 64 << 20)) and bool(libc.mallopt(-1, 256 << 20))
    except (OSError, AttributeError):  # musl or no libc.so.6: keep the defaults
        return False
