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
    may run with MindSpore's compile cache on (:class:`_CompileCache`): a later process that
    compiles the same graphs in the same order loads them instead of compiling (the first
    training step's peak RSS: 720 -> ~495 MB on the tiny benchmark config, 1464 -> ~1016 MB
    on small; docs/performance.md, "Memory")."""
    import mindspore

    compiled = mindspore.jit(fn)
    _compiled.extend((fn, compiled))
    if not os.environ.get(COMPILE_CACHE_ENV):
        return compiled
    seen = set()

    def call(*args, **kwargs):
        import hashlib

        h = hashlib.sha256()  # the input signature: MindSpore compiles once per signature
        _fingerprint((args, kwargs), h, {}, set(), 0, values=False)
        signature = h.digest()
        if signature in seen:
            return compiled(*args, **kwargs)
        seen.add(signature)
        return _compile_cache().run(compile_key(fn, args, kwargs), compiled, args, kwargs)

    call.__name__ = getattr(fn, "__name__", "call")
    call._msmm_jit_of = fn  # what compile_key fingerprints when a graph's object holds this wrapper
    _compiled.append(call)
    return call


class _CompileCache:
    """MindSpore's compile cache, made safe to use. MindSpore reads the cache directory once
    per process, numbers the graphs it caches in the order they are compiled (the N of
    ``compile_cache_N.mindir``) and, on a later run, loads graph N for the N-th cached compile
    whatever that compile is: it checks only a hash of the entry script's dependencies outside
    ``sys.path`` (msmm's modules are not among them), never the graph's inputs. So:

    * the directory is ``$MSMM_COMPILE_CACHE/<static key>/<key of the process's first cached
      graph>`` (:func:`_static_compile_key`: versions, device, ``MSMM_*``/``MS_*`` variables,
      msmm's and the entry script's sources; the first graph's key tells configurations apart);
    * ``msmm_manifest.json`` in it records which :func:`compile_key` produced each N;
    * the N-th cached compile of this process runs with the cache on only when the manifest's
      N is this key (MindSpore loads it) or is not there yet (MindSpore compiles and writes it:
      the new file must be ``compile_cache_N``, else the numbering is not ours and the cache
      is left off); at the first other key the cache stays off for the rest of the process,
      so a run loads only a prefix of graphs identical to the ones it would compile.
    """

    MANIFEST = "msmm_manifest.json"

    def __init__(self, root: str) -> None:
        self.root = os.path.join(os.path.abspath(root), _static_compile_key())
        self.dir = self.files = ""  # chosen by the first graph: one directory per configuration
        self.index = 0  # MindSpore's number for the next cached compile
        self.off = False
        self.manifest: dict = {}

    def _open(self, first_key: str) -> None:
        self.dir = os.path.join(self.root, first_key)
        self.files = os.path.join(self.dir, "rank_0", "graph_cache")
        self.manifest = self._read()

    def _read(self) -> dict:
        import json

        try:
            with open(os.path.join(self.dir, self.MANIFEST)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
        import json

        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, f"{self.MANIFEST}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(self.manifest, f)
        os.replace(tmp, os.path.join(self.dir, self.MANIFEST))

    def _cached(self) -> set:
        try:
            return {name for name in os.listdir(self.files) if name.startswith("compile_cache_")}
        except OSError:
            return set()

    def run(self, key: str, compiled: Callable, args: tuple, kwargs: dict):
        import mindspore

        if not self.dir:
            self._open(key)
        slot = str(self.index)
        recorded = self.manifest.get(slot)
        if self.off or (recorded is not None and recorded != key):
            self.off = True
            return compiled(*args, **kwargs)
        before = self._cached()
        mindspore.set_context(enable_compile_cache=True, compile_cache_path=self.dir)
        try:
            out = compiled(*args, **kwargs)
        finally:
            mindspore.set_context(enable_compile_cache=False)
        self.index += 1
        if recorded is None:  # MindSpore compiled it: it must have written graph N, and only that
            if self._cached() - before == {f"compile_cache_{slot}.mindir"}:
                self.manifest[slot] = key
                self._write()
            else:
                self.off = True
        return out


_cache: Optional[_CompileCache] = None


def _compile_cache() -> _CompileCache:
    global _cache
    if _cache is None:
        _cache = _CompileCache(os.environ[COMPILE_CACHE_ENV])
    return _cache


COMPILE_CACHE_ENV = "MSMM_COMPILE_CACHE"
_SOURCE_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".h")
_ADDRESS = __import__("re").compile(r" at 0x[0-9a-fA-F]+")
# per-process attributes of MindSpore's Cells (creation time, compiled phases): not part of a graph
# and what compiling sets on them (a run that loads its graphs never parses them)
_VOLATILE = frozenset({"_create_time", "_compile_cache", "_phase_cache", "arguments_key", "phase", "_phase",
                       "compile_cache", "_scope"})
_static_key: Optional[str] = None


def _static_compile_key() -> str:
    """What every graph of this process depends on: MindSpore's and Python's versions, the
    device, the ``MSMM_*`` / ``MS_*`` variables, and the sources of msmm, adapters and
    auto_convert (MindSpore's own cache check hashes only the entry script's dependencies
    outside ``sys.path``, which leaves them all out)."""
    global _static_key
    if _static_key is None:
        import hashlib
        import sys

        import mindspore

        h = hashlib.sha256()
        env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("MSMM_", "MS_"))
                     and k != COMPILE_CACHE_ENV and not k.startswith("MS_COMPILER_CACHE"))
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        h.update(repr((mindspore.__version__, sys.version, _device, env, main)).encode())
        if main and os.path.exists(main):
            with open(main, "rb") as f:
                h.update(f.read())
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for package in ("msmm", "adapters", "auto_convert"):
            for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(root, package))):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.endswith(_SOURCE_SUFFIXES):
                        path = os.path.join(dirpath, name)
                        h.update(os.path.relpath(path, root).encode())
                        with open(path, "rb") as f:
                            h.update(f.read())
        _static_key = h.hexdigest()
    return _static_key


def compile_key(fn: Callable, args: tuple, kwargs: dict) -> str:
    """The compile-cache directory name of ``fn``'s graph for these arguments: a hash of
    :func:`_static_compile_key`, ``fn``'s name and source file, the arguments (tensors by
    shape and dtype, Python values by value), and, for a bound method, everything its object
    reaches that a graph can capture: parameters by name, shape and dtype, other tensors and
    numpy arrays by value, Python scalars, strings and containers by value, and the source
    file of every class met (a user's model code included)."""
    import hashlib

    h = hashlib.sha256(_static_compile_key().encode())
    files = set()
    h.update(repr((getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))).encode())
    _fingerprint(getattr(fn, "__func__", fn), h, {}, files, 0)
    _fingerprint(getattr(fn, "__self__", None), h, {}, files, 0)
    _fingerprint((args, kwargs), h, {}, files, 0, values=False)  # graph inputs: shapes and dtypes
    for path in sorted(files):
        h.update(path.encode())
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    return h.hexdigest()[:32]


def _fingerprint(obj, h, seen: dict, files: set, depth: int, values: bool = True) -> None:
    """Feed ``h`` what a graph compiled from ``obj`` can depend on (see :func:`compile_key`);
    ``values=False``: tensors by shape and dtype only (graph inputs, not constants)."""
    import inspect

    import numpy as np
    from mindspore import Parameter, Tensor

    if depth > 64:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(repr((type(obj).__name__, obj)).encode())
        return
    if id(obj) in seen:
        h.update(f"<ref {seen[id(obj)][0]}>".encode())
        return
    seen[id(obj)] = (len(seen), obj)  # holds obj: a temporary's id must not be reused while walking
    if isinstance(obj, Parameter):
        h.update(repr(("P", obj.name, tuple(obj.shape), str(obj.dtype), obj.requires_grad)).encode())
    elif isinstance(obj, Tensor):  # a graph may take a tensor attribute as a constant: its value counts
        h.update(repr(("T", tuple(obj.shape), str(obj.dtype))).encode())
        if values:
            h.update(obj.asnumpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(repr(("A", obj.shape, str(obj.dtype))).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        h.update(f"<{type(obj).__name__} {len(obj)}>".encode())
        for item in (sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj):
            _fingerprint(item, h, seen, files, depth + 1, values)
    elif isinstance(obj, dict):
        h.update(f"<dict {len(obj)}>".encode())
        for k, v in obj.items():
            _fingerprint(k, h, seen, files, depth + 1, values)
            _fingerprint(v, h, seen, files, depth + 1, values)
    elif inspect.ismodule(obj):
        h.update(repr(("M", obj.__name__)).encode())
    elif inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj) or isinstance(obj, type):
        h.update(repr(("F", getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj)))).encode())
        _source_file(obj, files)
        if inspect.ismethod(obj):
            _fingerprint(obj.__self__, h, seen, files, depth + 1, values)
        elif hasattr(obj, "_msmm_jit_of"):  # this module's jit wrapper: the function it compiles
            _fingerprint(obj._msmm_jit_of, h, seen, files, depth + 1, values)
        elif hasattr(obj, "__wrapped__"):  # a decorator's wrapper (mindspore.jit's closes over its creation time)
            _fingerprint(obj.__wrapped__, h, seen, files, depth + 1, values)
        elif inspect.isfunction(obj):  # closures and defaults are captured values too
            _fingerprint(obj.__defaults__, h, seen, files, depth + 1, values)
            _fingerprint(obj.__kwdefaults__, h, seen, files, depth + 1, values)
            for cell in obj.__closure__ or ():
                try:
                    _fingerprint(cell.cell_contents, h, seen, files, depth + 1, values)
                except ValueError:  # an empty cell
                    pass
    else:
        cls = type(obj)
        h.update(repr(("O", cls.__module__, cls.__qualname__)).encode())
        for klass in cls.__mro__:
            _source_file(klass, files)
        state = getattr(obj, "__dict__", None)
        if state is None and hasattr(obj, "__slots__"):
            state = {k: getattr(obj, k, None) for k in cls.__slots__}
        if isinstance(state, dict):
            # None and an empty container alike: Cells create their hook dicts lazily
            _fingerprint({k: v for k, v in state.items() if not k.startswith("__") and k not in _VOLATILE
                          and not (v is None or (isinstance(v, (dict, list, tuple, set)) and not v))},
                         h, seen, files, depth + 1, values)
        else:
            h.update(_ADDRESS.sub("", repr(obj)).encode())


def _source_file(obj, files: set) -> None:
    import inspect

    try:
        path = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return
    if path and os.path.exists(path):
        files.add(os.path.abspath(path))


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
