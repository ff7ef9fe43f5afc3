"""The fused-kernel build cache (``adapters.kernels.build``): a cached build is reused and
marked used, and a new build prunes the same source's least recently used builds, never
another source's."""
from __future__ import annotations

import os
import time

import pytest

from adapters.kernels import build


@pytest.fixture
def cache(tmp_path, monkeypatch):
    if build._compiler_version() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("MSMM_KERNEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_source(tmp_path, value: int):
    source = tmp_path / "probe.cpp"
    source.write_text(f'extern "C" int Probe() {{ return {value}; }}\n')
    return source


def test_new_build_keeps_the_most_recently_used_builds_of_its_source(tmp_path, cache):
    cache.mkdir()
    now = time.time()
    stale = []
    for k in range(6):  # older builds of the same source, used 1..6 hours ago
        path = cache / f"probe-{k:016x}.so"
        path.write_bytes(b"old")
        os.utime(path, (now - 3600 * (k + 1),) * 2)
        stale.append(path)
    other = cache / f"probefoo-{0:016x}.so"  # another source whose name starts alike
    other.write_bytes(b"other")
    os.utime(other, (now - 10**6,) * 2)
    unrelated = cache / "notes.txt"
    unrelated.write_text("kept")

    first = build.compile_source(write_source(tmp_path, 1))
    kept = sorted(p.name for p in cache.glob("probe-*.so"))
    assert first.name in kept and len(kept) == build.KEEP_BUILDS
    assert kept == sorted([first.name] + [p.name for p in stale[:build.KEEP_BUILDS - 1]])  # the newest old ones
    assert other.exists() and unrelated.exists()

    # a cache hit returns the same file without compiling and marks it used
    os.utime(first, (now - 10**5,) * 2)
    assert build.compile_source(write_source(tmp_path, 1)) == first
    assert first.stat().st_mtime > now - 60

    second = build.compile_source(write_source(tmp_path, 2))  # an edited source: a new key
    assert second != first and second.exists() and first.exists()
    assert len(list(cache.glob("probe-*.so"))) == build.KEEP_BUILDS


def test_a_pruned_build_is_built_again(tmp_path, cache):
    source = write_source(tmp_path, 3)
    path = build.compile_source(source)
    path.unlink()
    assert build.compile_source(source) == path and path.exists()
