"""`python -m auto_convert SRC DST [--allow-partial]` and `--package NAME` (hook cache)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auto_convert import hook
from auto_convert.tree import convert_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auto_convert",
        description="Convert torch-style Python and torchrun scripts to adapters/msrun.")
    parser.add_argument("src", nargs="?", type=Path, help="file or directory to convert")
    parser.add_argument("dst", nargs="?", type=Path, help="where the converted copy goes")
    parser.add_argument("--package", action="append", default=[],
                        help="pre-convert this importable package into the import-hook cache "
                             "(repeatable) instead of SRC DST")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"hook cache (default: ${hook.CACHE_ENV} or "
                             "~/.cache/msmm/auto_convert)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 even if some constructs were left unconverted")
    parser.add_argument("--quiet", action="store_true", help="print only the totals line")
    args = parser.parse_args(argv)
    if bool(args.package) == bool(args.src and args.dst):
        parser.error("give SRC and DST, or --package NAME")

    if args.package:
        runs = [hook.preconvert(name, args.cache_dir) for name in args.package]
    else:
        try:
            run, report_dir = convert_path(args.src, args.dst)
        except (FileNotFoundError, ValueError) as err:
            print(err, file=sys.stderr)
            return 2
        path = run.write(report_dir)
        runs = [run]
    for run in runs:
        summary = run.summary()
        print(summary.splitlines()[-1] if args.quiet else summary, end="\n" if args.quiet else "")
    if not args.package:
        print(f"auto_convert: report written to {path}")
    complete = all(run.complete for run in runs)
    return 0 if complete or args.allow_partial else 1


if __name__ == "__main__":
    sys.exit(main())
