"""docs/compat.md is what the readers' tables say now (tools/compat_table.py)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import compat_table  # noqa: E402


def test_compat_page_is_current():
    assert compat_table.main(["--check"]) == 0, "run: python tools/compat_table.py"
