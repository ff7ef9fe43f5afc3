"""Session-wide test setup: one torch thread, MindSpore on CPU, fixed seeds."""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
os.environ.setdefault("MSMM_DEVICE", "CPU")
# MindSpore runs its host pipeline inline (no busy-waiting queue threads: msmm/train/host_pipeline.py);
# it reads this once, at the first op, so it is set before mindspore is imported.
os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")

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
