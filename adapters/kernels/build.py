"""Compile the fused CPU kernels (``csrc/*.cpp``) into shared libraries, once per machine.

Each source file becomes its own library, built with ``g++ -O3 -march=native`` into a
cache directory keyed by the source text, the compiler, the flags and the CPU's feature
flags: a cache shared between machines of different ISAs never hands one machine
another's build. The write is atomic (a temporary file renamed into place), so msrun
workers importing at the same time at worst compile twice. A build is marked used (its mtime)
whenever it is loaded, and a new build deletes all but the ``KEEP_BUILDS`` most recently used
builds of the same source, so editing a kernel does not grow the cache forever.

    python -m adapters.kernels.build      # ahead of time (``make install`` runs it)

``MSMM_FUSED_KERNELS=0`` turns the fused kernels off; ``MSMM_KERNEL_CACHE`` moves the cache
(default ``$XDG_CACHE_HOME/msmm/kernels``, i.e. ``~/.cache/msmm/kernels``). Without a
working ``g++`` the ops fall back to their composite MindSpore kernels with one warning.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

CSRC = Path(__file__).resolve().parent / "csrc"
CXX = os.environ.get("CXX", "g++")
FLAGS = ("-std=c++17", "-O3", "-march=native", "-shared", "-fPIC")
KEEP_BUILDS = 4  # builds kept per source, the most recently used (a new build prunes the rest)


def enabled() -> bool:
    """Fused kernels are on unless ``MSMM_FUSED_KERNELS=0``."""
    return os.environ.get("MSMM_FUSED_KERNELS", "1") != "0"


def cache_dir() -> Path:
    root = os.environ.get("MSMM_KERNEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msmm" / "kernels"


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@functools.lru_cache(maxsize=None)
def _compiler_version() -> Optional[str]:
    if shutil.which(CXX) is None:
        return None
    try:
        return subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _key(source: Path, flags: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (source.read_bytes(), *(h.read_bytes() for h in sorted(CSRC.glob("*.h"))),
                 " ".join(flags).encode(), (_compiler_version() or "").encode(), _cpu_flags().encode(),
                 platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class BuildError(RuntimeError):
    """The compiler refused a kernel source."""


def compile_source(source: Path, flags: Sequence[str] = ()) -> Path:
    """The cached library built from ``source`` (compiled now if missing); BuildError on failure."""
    flags = (*FLAGS, *flags)
    if _compiler_version() is None:
        raise BuildError(f"no C++ compiler ({CXX!r} not found) to build {source.name}")
    out = cache_dir() / f"{source.stem}-{_key(source, flags)}.so"
    try:
        os.utime(out)  # marks the build used (what pruning keeps); raises if it is not there
        return out
    except FileNotFoundError:
        pass
    except OSError:  # a read-only cache
        if out.exists():
            return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([CXX, *flags, f"-I{CSRC}", str(source), "-o", tmp], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{CXX} failed on {source}:\n{proc.stderr[-3000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    prune(out)
    return out


def prune(out: Path, keep: int = KEEP_BUILDS) -> None:
    """Delete all but the ``keep`` most recently used builds of ``out``'s source in its cache
    directory (the others come from older sources or flags, other compilers or CPUs sharing the
    cache). A library a running process has loaded stays mapped after its file is removed."""
    name = re.compile(rf"{re.escape(out.name.rsplit('-', 1)[0])}-[0-9a-f]{{16}}\.so")
    builds = []
    for path in out.parent.iterdir():
        if name.fullmatch(path.name):
            try:
                builds.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # pruned by another process just now
                pass
    builds.sort(reverse=True)
    for _, path in builds[keep:]:
        try:
            path.unlink()
        except OSError:
            pass


_failed: Dict[str, str] = {}


def library(name: str, flags: Sequence[str] = ()) -> Optional[str]:
    """Path of the library built from ``csrc/<name>.cpp``, or None when the fused kernels are
    off or cannot be built here (warned once per library; the callers fall back)."""
    if not enabled():
        return None
    if name in _failed:
        return None
    try:
        return str(compile_source(CSRC / f"{name}.cpp", flags))
    except BuildError as error:
        _failed[name] = str(error)
        warnings.warn(f"adapters.kernels: {error}; using the composite MindSpore kernels instead "
                      "(set MSMM_FUSED_KERNELS=0 to silence)", RuntimeWarning, stacklevel=2)
        return None


def main() -> int:
    """Build every kernel library into the cache, each with the flags its wrapper module asks
    for (importing ``adapters.kernels.<name>`` builds it); exit 1 if one fails."""
    import importlib

    for source in sorted(CSRC.glob("*.cpp")):
        importlib.import_module(f"{__package__}.{source.stem}")
        if source.stem in _failed:
            print(_failed[source.stem], file=sys.stderr)
        else:
            print(f"{source.name}: built")
    return 1 if _failed else 0


if __name__ == "__main__":
    sys.exit(main())
