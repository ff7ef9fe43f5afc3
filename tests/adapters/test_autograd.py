"""torch.autograd.Function and grad modes against real torch, in PyNative and graph mode."""
import mindspore as ms
import numpy as np
import pytest

import adapters.torch as torch_ms
from tests.adapters.harness import MODES, check, load_cases, randn

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


GRAD_MODE_CASES = ["no_grad_region", "no_grad_decorator", "enable_grad_inside_no_grad"]


@pytest.mark.parametrize("case", GRAD_MODE_CASES)
def test_grad_modes_pynative(case):
    check("autograd", case, [randn(4)], mode="pynative", api="torch.no_grad")


def test_grad_mode_state():
    assert torch_ms.is_grad_enabled()
    with torch_ms.no_grad():
        assert not torch_ms.is_grad_enabled()
        with torch_ms.enable_grad():
            assert torch_ms.is_grad_enabled()
        assert not torch_ms.is_grad_enabled()
    with torch_ms.inference_mode():
        assert not torch_ms.is_grad_enabled()
    torch_ms.set_grad_enabled(False)
    assert not torch_ms.is_grad_enabled()
    torch_ms.set_grad_enabled(True)
    with torch_ms.set_grad_enabled(False):
        assert not torch_ms.is_grad_enabled()
    assert torch_ms.is_grad_enabled()


def test_no_grad_compiles_in_graph_mode_without_stopping_gradients():
    """Documented limitation: graph mode has no grad-mode scope; no_grad compiles and is a no-op."""
    _, cases = load_cases("autograd")
    x = ms.Tensor(randn(4))

    def loss(t):
        return cases.no_grad_region(t).sum()

    grad = ms.jit(ms.grad(loss))(x)
    np.testing.assert_allclose(grad.asnumpy(), 6 * x.asnumpy(), rtol=1e-6)
