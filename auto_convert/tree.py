"""Convert a file or a tree: Python and shell files are rewritten, others copied."""
from __future__ import annotations

import shutil
from pathlib import Path

from auto_convert.python import convert_python
from auto_convert.report import FileReport, RunReport
from auto_convert.shell import convert_shell

SKIPPED_DIRS = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"}
CONVERTERS = {".py": convert_python, ".sh": convert_shell}


def convert_file(src: Path, dst: Path, name: str) -> FileReport:
    """Convert (or copy) `src` to `dst`; `name` is how the report calls the file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    converter = CONVERTERS.get(src.suffix)
    if converter is None:
        shutil.copy2(src, dst)
        return FileReport(path=name, kind="copied")
    kind = "python" if src.suffix == ".py" else "shell"
    try:
        text = src.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        shutil.copy2(src, dst)
        return FileReport(path=name, kind=kind, error=f"{name}: not UTF-8 ({err.reason})")
    converted, report = converter(text, name)
    dst.write_bytes(converted.encode("utf-8"))
    shutil.copymode(src, dst)
    return report


def convert_path(src: Path, dst: Path) -> tuple[RunReport, Path]:
    """Convert `src` (file or directory) into `dst`; returns the report and its directory."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.exists():
        raise FileNotFoundError(f"auto_convert: source {src} does not exist")
    if src == dst:
        raise ValueError(f"auto_convert: source and destination are both {src}")
    run = RunReport(source=str(src), destination=str(dst))
    if src.is_file():
        target = dst / src.name if dst.is_dir() else dst
        run.files.append(convert_file(src, target, src.name))
        return run, target.parent
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or SKIPPED_DIRS.intersection(rel.parts) or dst in path.parents:
            continue
        run.files.append(convert_file(path, dst / rel, rel.as_posix()))
    return run, dst
