"""Dump the harness's records (API, mode) when MSMM_ADAPTERS_RECORDS names a file."""
import os

from tests.adapters import harness


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MSMM_ADAPTERS_RECORDS")
    if path:
        harness.dump_records(path)
