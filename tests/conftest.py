"""Session-wide test setup: one torch thread, MindSpore on CPU, fixed seeds."""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
os.environ.setdefault("MSMM_DEVICE", "CPU")

import numpy as np
import pytest

try:  # the reference stack is a test extra; tests that need it import it themselves
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

import mindspore

mindspore.set_device("CPU")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
