"""What an msrun job's worker logs say, on the console: run after ``msrun`` by the example
scripts, since msrun keeps each worker's output in ``LOG_DIR/worker_N.log`` and, when a worker
fails, prints only "Please check logs in directory ...".

    msrun ... || status=$?
    python -m msmm.train.msrun_report "$SAVE_PATH/msrun_log" --status $status --show "iteration|saved"

prints, per worker, the lines matching ``--show`` (worker 0 only), every data warning
(skipped samples with ``file:line``, epoch summaries, ignored data.json keys; at most
``--max-warnings`` a worker, then how many more), and with a non-zero ``--status`` the error
each failed worker stopped with (the exception of its last traceback, or an ``msmm-train:``
message), identical errors of several workers once.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from typing import List, Optional, Sequence

WARNING = re.compile(r"^(skipped \S+: [a-z_]+: |epoch \d+: skipped \d+ sample|WARNING: |"
                     r"\S+: \S+: (unknown key, ignored|a MindSpeed-MM key msmm reads as))")
MESSAGE = re.compile(r"^msmm-(train|infer): ")


def worker_logs(log_dir: str) -> List[str]:
    logs = glob.glob(os.path.join(log_dir, "worker_*.log"))
    return sorted(logs, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))


def error_of(lines: Sequence[str]) -> Optional[str]:
    """The error a worker stopped with: the exception line (and its continuation) of the last
    traceback, else the last ``msmm-train:`` message, else None."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if starts:
        for i in range(starts[-1] + 1, len(lines)):
            if lines[i] and not lines[i][0].isspace():
                out = [lines[i]]
                for more in lines[i + 1 : i + 6]:
                    if not more.strip() or more.startswith(("-", "[", "Traceback")):
                        break
                    out.append(more)
                return "\n".join(out)
    messages = [line for line in lines if MESSAGE.match(line)]
    return messages[-1] if messages else None


def report(log_dir: str, status: int = 0, show: Optional[str] = None, max_warnings: int = 50,
           out=None) -> int:
    out = out if out is not None else sys.stdout
    logs = worker_logs(log_dir)
    if not logs:
        print(f"msrun: no worker log in {log_dir}", file=out)
        return status
    pattern = re.compile(show) if show else None
    errors: dict[str, List[str]] = {}
    for path in logs:
        name = os.path.basename(path)[: -len(".log")]
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        if pattern is not None and path == logs[0]:
            for line in lines:
                if pattern.search(line):
                    print(line, file=out)
        warnings = [line for line in lines if WARNING.match(line)]
        for line in warnings[:max_warnings]:
            print(f"{name}: {line}", file=out)
        if len(warnings) > max_warnings:
            print(f"{name}: ... and {len(warnings) - max_warnings} more warnings in {path}", file=out)
        if status:
            error = error_of(lines)
            if error is not None:
                errors.setdefault(error, []).append(name)
    if status:
        if not errors:
            print(f"msrun: the job failed (exit {status}) and no worker log holds an error; see {log_dir}", file=out)
        for error, names in errors.items():
            print(f"msrun: {', '.join(names)} stopped with:\n{error}", file=out)
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log_dir", help="msrun --log_dir")
    parser.add_argument("--status", type=int, default=0, help="msrun's exit status (non-zero: print the workers' errors)")
    parser.add_argument("--show", help="a regular expression: lines of worker 0 to print (progress)")
    parser.add_argument("--max-warnings", type=int, default=50, help="warnings printed per worker")
    args = parser.parse_args(argv)
    report(args.log_dir, args.status, args.show, args.max_warnings)
    return args.status


if __name__ == "__main__":
    sys.exit(main())
