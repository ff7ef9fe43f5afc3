"""torch.autograd.Function and grad modes against real torch, in PyNative and graph mode."""
import importlib.util
import sys

import mindspore as ms
import numpy as np
import pytest
import torch as torch_ref

import adapters.torch as torch_ms
from auto_convert import convert_python
from tests.adapters.harness import CASES_DIR, MODES, check, load_cases, randn

FUNCTION_CASES = [
    ("scaled_mul", [randn(2, 3), randn(2, 3, seed=1)]),
    ("scaled_mul_default", [randn(4), randn(4, seed=1)]),
    ("square_and_double", [randn(3, 2)]),
    ("fake_grad", [randn(5)]),
    ("only_first_grad", [randn(3), randn(3, seed=1)]),
    ("megatron_parallel_region", [randn(2, 4), randn(4, 3, seed=1)]),
    ("megatron_region_with_group_object", [randn(2, 4), randn(2, 4, seed=1)]),
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


def _summed(fn):
    def loss(t):
        return fn(t).sum()

    return loss


def test_no_grad_stops_gradients_in_graph_mode_once_converted(tmp_path):
    """Graph mode compiles the grad-mode managers as no-ops; auto_convert wraps what a
    no_grad block (or a no_grad function) computes in no_grad_value, so converted code gets
    torch's gradients under jit."""
    source = "import torch\n" + (CASES_DIR / "autograd.py").read_text()
    converted, report = convert_python(source, "autograd.py")
    assert not report.unconverted
    path = tmp_path / "autograd_converted.py"
    path.write_text(converted)
    spec = importlib.util.spec_from_file_location("autograd_converted", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    ref, _ = load_cases("autograd")
    x = randn(4)
    for case in GRAD_MODE_CASES:
        want = torch_ref.tensor(x, requires_grad=True)
        getattr(ref, case)(want).sum().backward()

        got = ms.jit(ms.grad(_summed(getattr(module, case))))(ms.Tensor(x))
        np.testing.assert_allclose(got.asnumpy(), want.grad.numpy(), rtol=1e-5, err_msg=case)


def test_function_forward_runs_once_in_graph_mode():
    """bprop takes forward's ctx state from forward's own outputs: the mask backward uses is
    the one forward drew (a re-run forward would draw another)."""
    _, cases = load_cases("autograd")
    x = ms.Tensor(np.abs(randn(64)) + 0.5)

    def loss(t):
        out = cases.random_mask(t)
        return out.sum(), out

    (_, out), grad = ms.jit(ms.value_and_grad(loss, has_aux=True))(x)
    np.testing.assert_array_equal(grad.asnumpy(), (out.asnumpy() != 0).astype(np.float32))
    assert 0 < (out.asnumpy() != 0).sum() < 64
