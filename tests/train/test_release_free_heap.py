"""msmm.runtime.release_free_heap: the C heap's free pages go back to the OS (glibc)."""
from __future__ import annotations

import ctypes

import pytest

from msmm.runtime import release_free_heap


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_freed_heap_is_returned():
    try:
        ctypes.CDLL(None).malloc_trim
    except AttributeError:
        pytest.skip("no glibc malloc_trim here")
    release_free_heap()
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB of malloc'd heap (above pymalloc's 512 B)
    keep = blocks[-1]  # holds the top of the heap: free() alone cannot shrink it
    del blocks
    before = resident_mb()
    release_free_heap()
    assert before - resident_mb() > 100
    assert len(keep) == 4000
