"""torch.autograd.Function and grad modes against real torch, in PyNative and graph mode."""
import mindspore as ms
import numpy as np
import pytest

import adapters.torch as torch_ms
from tests.adapters.harness import MODES, check, randn

FUNCTION_CASES = [
    ("scaled_mul", [randn(2, 3), randn(2, 3, seed=1)]),
    ("scaled_mul_default", [randn(4), randn(4, seed=1)]),
    ("square_and_double", [randn(3, 2)]),
    ("fake_grad", [randn(5)]),
    ("only_first_grad", [randn(3), randn(3, seed=1)]),
    ("megatron_parallel_region", [randn(2, 4), randn(4, 3, seed=1)]),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case,inputs", FUNCTION_CASES, ids=[c for c, _ in FUNCTION_CASES])
def test_function(mode, case, inputs):
    check("autograd", case, inputs, mode=mode, api="torch.autograd.Function")
