"""Regenerate the coverage table of docs/adapters.md from the contract tests.

    python tools/adapters_coverage.py [--records FILE]

runs ``pytest tests/adapters`` with the harness recording every API it compared with
torch (and in which mode), then rewrites the table between the markers in
docs/adapters.md. An API is listed for a mode only when its comparison passed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adapters.md"
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"


def run_tests() -> list:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        env = dict(os.environ, MSMM_ADAPTERS_RECORDS=str(out))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/adapters"], cwd=ROOT, env=env)
        return json.loads(out.read_text()) if out.exists() else []


def ascend_column(api: str, table: dict) -> str:
    op = api.split(".")[-1]
    if op not in table:
        return "same kernel as CPU, untested"
    entry = table[op].get("Ascend")
    if entry is None:
        return "no kernel: raises UnsupportedOpError"
    return ("fused/mint kernel, tested" if entry.tested else "fused/mint kernel, untested") + (
        f" ({entry.note})" if entry.note else "")


def render(records: list) -> str:
    sys.path.insert(0, str(ROOT))
    from adapters.torch._dispatch import TABLE

    modes = defaultdict(set)
    for rec in records:
        modes[rec["api"]].add(rec["mode"])
    lines = ["| API | PyNative | graph mode | CPU | Ascend |", "|---|---|---|---|---|"]
    for api in sorted(modes):
        got = modes[api]
        cpu = "yes"  # compared on this CPU machine; graph-mode gaps show in their own column
        lines.append(f"| `{api}` | {'yes' if 'pynative' in got else 'no'} | "
                     f"{'yes' if 'graph' in got else 'no'} | {cpu} | {ascend_column(api, TABLE)} |")
    return "\n".join(lines)


def main() -> None:
    # --records FILE: reuse what a test run with MSMM_ADAPTERS_RECORDS=FILE wrote
    if len(sys.argv) == 3 and sys.argv[1] == "--records":
        records = json.loads(Path(sys.argv[2]).read_text())
    else:
        records = run_tests()
    table = render(records)
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"wrote {table.count(chr(10)) - 1} rows to {DOC}")


if __name__ == "__main__":
    main()
