"""msmm.runtime.memory_breakdown: resident memory by kind (shared libraries, malloc heap,
MindSpore's CPU pool block, other anonymous memory), as docs/performance.md's memory table
reads it."""
from __future__ import annotations

import ctypes
import os

import pytest

from msmm.runtime import POOL_MAPPING_MB, memory_breakdown, release_free_heap

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")


def statm_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_parts_add_up_to_the_resident_size():
    parts = memory_breakdown()
    assert set(parts) >= {"rss", "libs", "heap", "pool", "anon"}
    assert parts["rss"] == pytest.approx(parts["libs"] + parts["heap"] + parts["pool"] + parts["anon"])
    assert abs(parts["rss"] - statm_rss_mb()) < 16  # smaps and statm agree
    assert parts["libs"] > 5  # python, numpy, MindSpore's libraries


def test_a_big_block_counts_as_pool_by_its_touched_pages_and_small_blocks_as_heap():
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2
    except (OSError, AttributeError):
        pytest.skip("no glibc mallinfo2 here")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # whole free heap pages that earlier tests left resident would take the blocks below without
    # growing the resident heap: hand them back first, so the new blocks are paged in
    release_free_heap()
    before = memory_breakdown()
    block = libc.malloc((POOL_MAPPING_MB + 64) << 20)  # mmapped on its own, like MindSpore's pool block
    assert block
    try:
        ctypes.memset(block, 1, 64 << 20)  # touch 64 MB of it
        # ~40 MB from malloc's main arena, in blocks below the mmap threshold (128 KB) and too
        # big for the holes a long session leaves between small live blocks
        small = [bytearray(64 << 10) for _ in range(640)]
        after = memory_breakdown()
        assert 60 < after["pool"] - before["pool"] < 80  # (transparent huge pages round up)
        assert after["heap"] - before["heap"] > 30
        assert after["malloc_in_use"] - before["malloc_in_use"] > 30
        assert len(small) == 640
    finally:
        libc.free(block)
    assert memory_breakdown()["pool"] - before["pool"] < 2  # freed: the mapping is gone
