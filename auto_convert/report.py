"""What a conversion did and what it could not do, per file and per run."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

REPORT_NAME = "auto_convert_report.json"
SUMMARY_NAME = "auto_convert_summary.txt"
REPORT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Change:
    """One rewrite: `rule` applied at `line` of the source, `before` -> `after`."""

    line: int
    rule: str
    before: str
    after: str
    why: str


@dataclasses.dataclass(frozen=True)
class Unconverted:
    """A construct left as it was at `line`, and why it could not be rewritten."""

    line: int
    construct: str
    reason: str


@dataclasses.dataclass
class FileReport:
    path: str
    kind: Literal["python", "shell", "copied"]
    changes: list[Change] = dataclasses.field(default_factory=list)
    unconverted: list[Unconverted] = dataclasses.field(default_factory=list)
    error: str | None = None  # a file that could not be parsed is copied unchanged

    @property
    def complete(self) -> bool:
        return not self.unconverted and self.error is None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "error": self.error,
            "changes": [dataclasses.asdict(c) for c in self.changes],
            "unconverted": [dataclasses.asdict(u) for u in self.unconverted],
        }

    @classmethod
    def from_json(cls, data: dict) -> "FileReport":
        return cls(
            path=data["path"],
            kind=data["kind"],
            error=data.get("error"),
            changes=[Change(**c) for c in data["changes"]],
            unconverted=[Unconverted(**u) for u in data["unconverted"]],
        )


@dataclasses.dataclass
class RunReport:
    source: str
    destination: str
    files: list[FileReport] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(f.complete for f in self.files)

    def totals(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "converted_files": sum(1 for f in self.files if f.kind != "copied"),
            "changes": sum(len(f.changes) for f in self.files),
            "unconverted": sum(len(f.unconverted) for f in self.files),
            "errors": sum(1 for f in self.files if f.error is not None),
        }

    def to_json(self) -> dict:
        return {
            "version": REPORT_VERSION,
            "source": self.source,
            "destination": self.destination,
            "complete": self.complete,
            "totals": self.totals(),
            "files": [f.to_json() for f in self.files],
        }

    def summary(self) -> str:
        """The human-readable form: per file, rules applied and constructs left, by line."""
        lines = []
        for f in self.files:
            if f.kind == "copied":
                continue
            state = "ok" if f.complete else "PARTIAL"
            lines.append(f"{f.path} [{f.kind}] {len(f.changes)} change(s), "
                         f"{len(f.unconverted)} unconverted: {state}")
            if f.error:
                lines.append(f"  ERROR {f.error}")
            for c in f.changes:
                lines.append(f"  {f.path}:{c.line}: {c.rule}: {c.before} -> {c.after}")
            for u in f.unconverted:
                lines.append(f"  {f.path}:{u.line}: UNCONVERTED {u.construct}: {u.reason}")
        t = self.totals()
        lines.append(
            f"auto_convert: {t['converted_files']} file(s) converted, {t['changes']} change(s), "
            f"{t['unconverted']} construct(s) left unconverted, {t['errors']} error(s), "
            f"{t['files'] - t['converted_files']} file(s) copied"
        )
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> Path:
        """Write the JSON report and the summary into `directory`; return the JSON path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / REPORT_NAME
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        (directory / SUMMARY_NAME).write_text(self.summary())
        return path
