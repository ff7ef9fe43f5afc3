"""Batch memory: a batch's samples written end to end in one buffer, so that the batch is a view
of them instead of a copy, in memory that is already paged in.

The transforms allocate their outputs with :func:`empty`. Outside a loader that is
``np.empty``; while a :class:`BatchArena` is :meth:`~BatchArena.active` (the loader activates
its arena around building each sample), the outputs of one batch's samples are laid one after
another in a buffer, and :func:`join` (the collators' and the datasets' concatenation) returns
the view that covers parts lying end to end instead of copying them.

Buffers are reused, never overwritten while in use: a batch holds its buffer (numpy views keep
their base alive), and a buffer is taken for a new batch only when nothing but the pool
references it, that is when every batch and sample array cut from it has been dropped. Why: a
fresh 50-130 MB batch array is page-faulted in and zeroed by the kernel on every batch
(3.5-17 ms per sample here), and the copy into it costs as much again (issue 18).
"""
from __future__ import annotations

import contextlib
import math
import sys
from typing import Iterator, Optional, Sequence

import numpy as np

_POOL: list[np.ndarray] = []  # uint8 buffers of this process, free when nothing else references them
_POOL_SIZE = 3  # buffers kept: a loader uses two in turn (the consumer holds one batch while the next is built)
_active: Optional["BatchArena"] = None


def _free(buffer: np.ndarray) -> bool:
    # references: _POOL, the caller's loop variable, this function's argument, getrefcount's argument
    return sys.getrefcount(buffer) <= 4


def _trim() -> None:
    """Forget free buffers beyond _POOL_SIZE, smallest first (a held one goes when its last view does)."""
    while len(_POOL) > _POOL_SIZE:
        free = [i for i, buffer in enumerate(_POOL) if _free(buffer)]
        if not free:
            return
        del _POOL[min(free, key=lambda i: _POOL[i].nbytes)]


class BatchArena:
    """Bump allocation of one batch's sample arrays in a pooled buffer.

    ``start_batch()`` before the samples of each batch; a sample that does not fit moves the
    batch to a larger buffer (the batch is then joined by copying, once; later batches fit).
    """

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = max(1, batch_size)
        self._buffer: Optional[np.ndarray] = None
        self._offset = 0

    def start_batch(self) -> None:
        self._buffer, self._offset = None, 0
        for buffer in _POOL:
            if _free(buffer) and (self._buffer is None or buffer.nbytes > self._buffer.nbytes):
                self._buffer = buffer
        _trim()

    def empty(self, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        start = -(-self._offset // dtype.alignment) * dtype.alignment
        if self._buffer is None or start + nbytes > self._buffer.nbytes:
            self._buffer, start = self._new_buffer(nbytes), 0
        self._offset = start + nbytes
        return self._buffer[start : start + nbytes].view(dtype).reshape(shape)

    def _new_buffer(self, nbytes: int) -> np.ndarray:
        size = max(nbytes * self.batch_size * 5 // 4, 2 * (self._buffer.nbytes if self._buffer is not None else 0), 1 << 20)
        buffer = np.empty(size, np.uint8)
        _POOL.append(buffer)
        _trim()
        return buffer

    @contextlib.contextmanager
    def active(self) -> Iterator["BatchArena"]:
        global _active
        previous, _active = _active, self
        try:
            yield self
        finally:
            _active = previous


def empty(shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """``np.empty(shape, dtype)``, from the active batch arena if there is one."""
    return np.empty(shape, dtype) if _active is None else _active.empty(shape, dtype)


def join(parts: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)``; without a copy when the parts lie end to end in one buffer (the
    samples of a batch built in an arena), and a single part is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    base = first.base
    if (
        isinstance(base, np.ndarray) and base.dtype == np.uint8 and base.ndim == 1 and first.ndim >= 1
        and all(p.base is base and p.dtype == first.dtype and p.shape[1:] == first.shape[1:] and p.flags.c_contiguous
                for p in parts)
    ):
        address = first.ctypes.data
        for p in parts:
            if p.size and p.ctypes.data != address:
                break
            address += p.nbytes
        else:
            start = first.ctypes.data - base.ctypes.data
            rows = sum(len(p) for p in parts)
            return base[start : address - base.ctypes.data].view(first.dtype).reshape(rows, *first.shape[1:])
    return np.concatenate(parts)
