"""Source-to-source converter from torch-style code to code bound to `adapters.torch`.

- `convert_python` / `convert_shell`: one source text -> (converted text, FileReport)
- `convert_path`: a file or tree, as `python -m auto_convert SRC DST` does
- `auto_convert.hook`: convert registered packages at import time, cached on disk

The rewrite rules live in `auto_convert.rules`; docs/auto_convert.md lists them.
"""
from auto_convert.python import convert_python
from auto_convert.report import Change, FileReport, RunReport, Unconverted
from auto_convert.shell import convert_shell
from auto_convert.tree import convert_path

__all__ = ["convert_python", "convert_shell", "convert_path", "Change", "FileReport",
           "RunReport", "Unconverted"]
