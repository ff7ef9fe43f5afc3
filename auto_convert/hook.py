"""Import hook: registered packages are converted on first import, cached on disk.

The converted file is what the module is loaded from, so `module.__file__` and every
code object's `co_filename` name it: MindSpore's graph compiler reads function source
through `inspect`, and must see the adapters-bound code. `__path__` stays the original
package directory, so submodules (and relative imports) go through the hook as well.

Under real torch nothing is installed and the same files import unchanged.
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from auto_convert import rules
from auto_convert.python import convert_python
from auto_convert.report import FileReport, RunReport

ENABLE_ENV = "MSMM_AUTO_CONVERT"  # "1": install_from_env() installs the hook
CACHE_ENV = "MSMM_AUTO_CONVERT_CACHE"  # cache directory
PACKAGES_ENV = "MSMM_AUTO_CONVERT_PACKAGES"  # comma-separated, default msmm.models
DEFAULT_PACKAGES = ("msmm.models",)


class AutoConvertWarning(UserWarning):
    """A hooked module was loaded with constructs left unconverted."""


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "msmm" / "auto_convert"


def converter_version() -> str:
    """Digest of the converter's own sources and the data its rules read: a rule change
    invalidates every cache entry."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in (here / "rules.py", here / "python.py", here / "grad_mode.py", rules.API_STATUS,
                 rules.TENSOR_METHODS_SOURCE):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


class ConvertedCache:
    """Converted sources on disk, named `<module>.<digest>.py`, keyed by the source's hash."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.version = converter_version()

    def path_for(self, fullname: str, source: bytes) -> Path:
        key = hashlib.sha256(self.version.encode() + b"\0" + source).hexdigest()[:16]
        return self.root / f"{fullname}.{key}.py"

    def get(self, fullname: str, origin: Path) -> tuple[Path, FileReport | None]:
        """The converted file for `origin`; the report when it was converted just now."""
        source = origin.read_bytes()
        target = self.path_for(fullname, source)
        if target.exists():
            return target, None
        converted, report = convert_python(source.decode("utf-8"), str(origin))
        if report.error:
            raise SyntaxError(f"auto_convert: cannot parse {report.error}")
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(target.with_suffix(".json"),
                      json.dumps(report.to_json(), indent=2).encode())
        _atomic_write(target, converted.encode("utf-8"))
        return target, report

    def report_for(self, converted: Path) -> FileReport:
        return FileReport.from_json(json.loads(converted.with_suffix(".json").read_text()))


def _atomic_write(path: Path, data: bytes) -> None:
    """Concurrent msrun workers may convert the same file: write aside, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class AutoConvertFinder(importlib.abc.MetaPathFinder):
    """Finds modules of the registered packages and loads them from converted files."""

    def __init__(self, packages: Iterable[str], cache: ConvertedCache) -> None:
        self.packages = set(packages)
        self.cache = cache

    def covers(self, fullname: str) -> bool:
        return any(fullname == p or fullname.startswith(p + ".") for p in self.packages)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target=None):
        if not self.covers(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        converted, report = self.cache.get(fullname, Path(spec.origin))
        if report is not None and report.unconverted:
            where = "; ".join(f"line {u.line}: {u.construct} ({u.reason})"
                              for u in report.unconverted)
            warnings.warn(f"auto_convert: {spec.origin} left unconverted: {where}",
                          AutoConvertWarning, stacklevel=2)
        loader = importlib.machinery.SourceFileLoader(fullname, str(converted))
        return importlib.util.spec_from_file_location(
            fullname, converted, loader=loader,
            submodule_search_locations=spec.submodule_search_locations)


def installed() -> AutoConvertFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, AutoConvertFinder)), None)


def install(packages: Iterable[str] = DEFAULT_PACKAGES,
            cache_dir: str | os.PathLike | None = None) -> AutoConvertFinder:
    """Convert `packages` (and their subpackages) on import. Installing again adds packages."""
    packages = list(packages)
    finder = installed()
    if finder is None:
        finder = AutoConvertFinder(packages, ConvertedCache(cache_dir or default_cache_dir()))
        sys.meta_path.insert(0, finder)
    else:
        if cache_dir is not None and Path(cache_dir) != finder.cache.root:
            raise ValueError(f"auto_convert hook already installed with cache "
                             f"{finder.cache.root}, not {cache_dir}")
        finder.packages.update(packages)
    loaded = sorted(m for m in sys.modules if finder.covers(m))
    if loaded:
        warnings.warn(f"auto_convert: {', '.join(loaded)} imported before the hook was "
                      "installed; those modules are not converted", AutoConvertWarning,
                      stacklevel=2)
    return finder


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AutoConvertFinder)]


def install_from_env() -> AutoConvertFinder | None:
    """Install the hook when MSMM_AUTO_CONVERT=1 (what `source auto_convert.sh mm` sets)."""
    if os.environ.get(ENABLE_ENV) != "1":
        return None
    packages = os.environ.get(PACKAGES_ENV, ",".join(DEFAULT_PACKAGES))
    return install([p.strip() for p in packages.split(",") if p.strip()])


def preconvert(package: str, cache_dir: str | os.PathLike | None = None) -> RunReport:
    """Convert every module of `package` into the cache without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(f"auto_convert: {package} is not an importable package")
    cache = ConvertedCache(cache_dir or default_cache_dir())
    root = Path(next(iter(spec.submodule_search_locations)))
    run = RunReport(source=str(root), destination=str(cache.root))
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "__pycache__" in parts:
            continue
        fullname = ".".join((package, *parts))
        converted, report = cache.get(fullname, path)
        run.files.append(report or cache.report_for(converted))
    return run
