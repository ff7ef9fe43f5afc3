"""Session-wide test setup: one torch thread, MindSpore started on CPU, fixed seeds.

``msmm.runtime.start`` runs before any MindSpore op (inline host pipeline), without the
import hook: the tests run ``msmm.models`` on real torch and convert them themselves
(``tests/models/ms_backend.py``)."""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only

import numpy as np
import pytest

try:  # the reference stack is a test extra; tests that need it import it themselves
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

from msmm import runtime

runtime.start(os.environ.get("MSMM_DEVICE", "CPU"), convert_models=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (e.g. the differential tester's long tail)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
