"""The one start of MindSpore for msmm: device, inline host pipeline, import hook.

Every entry point (``msmm-train``, ``msmm-infer``, ``msmm-chat``, ``msmm-eval``, the test
suite's conftest, the benchmarks, the quickstart notebook, and your own scripts) calls
:func:`start` before the first MindSpore op and before anything imports ``msmm.models``.
Importing an msmm package starts nothing.

**Host pipeline.** MindSpore 2.10 hands every PyNative op and every call of a compiled graph
to a chain of worker threads (``frontend_queue``, ``backend_queue``); a thread that needs a
result (``asnumpy``, the next graph's inputs) waits for the queues to drain in a loop that never
sleeps (``AsyncRQueue::Wait``). On a CPU the waiting thread takes a core from the graph's own
kernel threads: on 2 cores ``perf`` puts 60% of a training step's samples in that loop, the
step's CPU time equals its wall time, and every kernel of the backward graph (where the graph
runs independent branches on the kernel threads) appears to take 0.2-1.5 ms.
``MS_DEV_HOST_BLOCKING_RUN=1`` makes the queues run each task in the calling thread instead.
MindSpore reads it once, at the first op of the process, so :func:`start` sets it (unless
already set) on CPU before any op; :func:`async_queue_threads` tells whether it came too late.
On Ascend the queues overlap host dispatch with the device, so nothing is changed there.

**Compiled graphs.** MindSpore caches a compiled graph by the id() of the Python callable and
re-reads source files at compile time: a freed callable whose id a new one reuses would find
the old graph. :func:`jit` compiles and keeps both alive for the process.
"""
from __future__ import annotations

import ctypes
import os
from typing import Callable, List, Optional

from msmm import compile_cache

DEVICES = ("CPU", "Ascend")
DEVICE_ENV = "MSMM_DEVICE"  # read by adapters' kernel dispatch when adapters.torch is imported
HOST_BLOCKING_ENV = "MS_DEV_HOST_BLOCKING_RUN"
MODELS_PACKAGE = "msmm.models"
_QUEUE_THREADS = ("frontend_queue", "backend_queue")

_device: Optional[str] = None  # set by the first start()
_compiled: List[Callable] = []  # every callable jit() compiled, and its graph callable


def start(device: Optional[str] = None, convert_models: bool = True) -> str:
    """Start MindSpore for msmm in this process; returns the device ("CPU" or "Ascend").

    The device is ``device``, else ``MSMM_DEVICE``, else MindSpore's ``device_target``; it
    becomes MindSpore's device and ``MSMM_DEVICE`` (from which ``adapters.torch`` picks its
    kernels). On CPU, MindSpore's host pipeline runs inline (``MS_DEV_HOST_BLOCKING_RUN=1``
    unless set; module docstring). With ``convert_models`` the auto_convert import hook is
    installed for ``msmm.models`` (the model files then bind to ``adapters.torch``) and, when
    ``MSMM_AUTO_CONVERT=1`` (what ``source auto_convert.sh mm`` exports), for the packages of
    ``MSMM_AUTO_CONVERT_PACKAGES``; tests that also run the models on real torch pass False.

    Idempotent: a later call returns the same device (and installs the hook if it asks for it
    and an earlier call did not); asking for another device is an error.
    """
    global _device
    if _device is None:
        _device = _start_mindspore(device)
    elif device is not None and device != _device:
        raise RuntimeError(f"msmm.runtime: already started on {_device}; cannot switch to {device}")
    if convert_models:
        _install_hook()
    return _device


def _start_mindspore(device: Optional[str]) -> str:
    device = device or os.environ.get(DEVICE_ENV)
    if device is None:
        import mindspore

        device = mindspore.get_context("device_target") or "CPU"
    if device not in DEVICES:
        raise ValueError(f"msmm.runtime: unsupported device {device!r} ({DEVICE_ENV}); expected one of {DEVICES}")
    if device == "CPU":
        os.environ.setdefault(HOST_BLOCKING_ENV, "1")
    import mindspore

    if mindspore.get_context("device_target") != device:
        mindspore.set_device(device)
    os.environ[DEVICE_ENV] = device
    return device


def _install_hook() -> None:
    """The auto_convert hook for msmm.models and, with MSMM_AUTO_CONVERT=1, the packages of
    MSMM_AUTO_CONVERT_PACKAGES (``hook.install_from_env``'s), each once."""
    from auto_convert import hook

    packages = [MODELS_PACKAGE]
    if os.environ.get(hook.ENABLE_ENV) == "1":
        listed = os.environ.get(hook.PACKAGES_ENV, ",".join(hook.DEFAULT_PACKAGES))
        packages += [p.strip() for p in listed.split(",") if p.strip()]
    finder = hook.installed()
    missing = [p for p in dict.fromkeys(packages) if finder is None or not finder.covers(p)]
    if missing:
        hook.install(missing)


def async_queue_threads() -> List[str]:
    """Names of MindSpore's host pipeline worker threads alive in this process (Linux ``/proc``;
    empty elsewhere): non-empty means the pipeline runs asynchronously."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name in _QUEUE_THREADS:
            names.append(name)
    return sorted(set(names))


def jit(fn: Callable) -> Callable:
    """``mindspore.jit(fn)`` (AST capture: parameters stay parameters), compiled on first call
    per input shapes; ``fn`` and the compiled callable live as long as the process, so no
    later callable can be served their graph.

    With ``MSMM_COMPILE_CACHE=<dir>`` (opt-in) the first call of each new input signature
    may run with MindSpore's compile cache on (:mod:`msmm.compile_cache`): a later process that
    compiles the same graphs in the same order loads them instead of compiling (the first
    training step's peak RSS: 720 -> ~495 MB on the tiny benchmark config, 1464 -> ~1016 MB
    on small; docs/performance.md, "Memory")."""
    import mindspore

    compiled = mindspore.jit(fn)
    _compiled.extend((fn, compiled))
    if not os.environ.get(compile_cache.COMPILE_CACHE_ENV):
        return compiled
    call = compile_cache.cached_call(fn, compiled)
    _compiled.append(call)
    return call


POOL_MAPPING_MB = 512  # an anonymous mapping at least this big is MindSpore's CPU memory pool block


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def memory_breakdown() -> dict:
    """Where this process's resident memory is, in MB (Linux ``/proc/self/smaps``; ``{}``
    elsewhere): ``rss``; ``libs`` (file-backed pages: MindSpore's shared libraries and the
    rest); ``heap`` (the main malloc arena, ``[heap]``); ``pool`` (resident part of the
    anonymous mappings of at least ``POOL_MAPPING_MB``: MindSpore's CPU memory pool mallocs its
    block, ~1 GB, in one piece, and only the pages its tensors touched count); ``anon`` (the
    other anonymous mappings: Python's object arenas, other threads' malloc arenas, large
    mmapped blocks, thread stacks). With glibc also ``malloc_in_use`` and ``malloc_free``
    (``mallinfo2`` over every arena, mmapped blocks included in neither): free bytes held by
    malloc, resident unless trimmed. docs/performance.md, "Memory", reads these per start-up
    stage."""
    try:
        smaps = open("/proc/self/smaps")
    except OSError:
        return {}
    out = {"libs": 0.0, "heap": 0.0, "pool": 0.0, "anon": 0.0}
    kind = "anon"
    with smaps:
        for line in smaps:
            first = line.split(None, 6)
            if "-" in first[0] and len(first) >= 5 and ":" not in first[0]:  # a mapping's header line
                lo, hi = (int(x, 16) for x in first[0].split("-"))
                path = first[5].strip() if len(first) > 5 else ""
                if path.startswith("/"):
                    kind = "libs"
                elif path == "[heap]":
                    kind = "heap"
                elif path:  # [stack], [vdso], [vvar]...
                    kind = "anon"
                else:
                    kind = "pool" if hi - lo >= POOL_MAPPING_MB << 20 else "anon"
            elif first[0] == "Rss:":
                out[kind] += int(first[1]) / 1024
    out["rss"] = sum(out.values())
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return out
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    out["malloc_in_use"] = info.uordblks / 2**20
    out["malloc_free"] = info.fordblks / 2**20
    return out


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``; nothing where the
    C library has none). Compiling the training step's graphs frees 50 MB (tiny config) to
    210 MB (small) of heap that glibc keeps resident (docs/performance.md, "Train step"); the
    trainer calls this once, after its first step."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
