"""``MSMM_COMPILE_CACHE=<dir>``: MindSpore's compile cache, keyed so that it cannot load the
wrong graph (:class:`CompileCache`). ``msmm.runtime.jit`` routes the first call of each new
input signature through :func:`cached_call`'s wrapper when the variable is set; with it unset
nothing here runs. Why and what it saves: docs/performance.md, "Memory"."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
from typing import Callable, Optional

COMPILE_CACHE_ENV = "MSMM_COMPILE_CACHE"


def cached_call(fn: Callable, compiled: Callable) -> Callable:
    """``compiled`` (``mindspore.jit(fn)``) whose first call per input signature runs through
    the process's :class:`CompileCache`."""
    seen = set()

    def call(*args, **kwargs):
        h = hashlib.sha256()  # the input signature: MindSpore compiles once per signature
        _fingerprint((args, kwargs), h, {}, set(), 0, values=False)
        signature = h.digest()
        if signature in seen:
            return compiled(*args, **kwargs)
        seen.add(signature)
        return _compile_cache().run(compile_key(fn, args, kwargs), compiled, args, kwargs)

    call.__name__ = getattr(fn, "__name__", "call")
    call._msmm_jit_of = fn  # what compile_key fingerprints when a graph's object holds this wrapper
    return call


class CompileCache:
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
        try:
            with open(os.path.join(self.dir, self.MANIFEST)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
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


_cache: Optional[CompileCache] = None


def _compile_cache() -> CompileCache:
    global _cache
    if _cache is None:
        _cache = CompileCache(os.environ[COMPILE_CACHE_ENV])
    return _cache


_SOURCE_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".h")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
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
        import mindspore

        from msmm.runtime import _device

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
    try:
        path = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return
    if path and os.path.exists(path):
        files.add(os.path.abspath(path))
