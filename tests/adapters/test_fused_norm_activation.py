"""The fused CPU kernels of adapters/kernels (norms, activations) against real torch: values
and gradients, PyNative and mindspore.jit, the fused path and the composite fallback it
replaces (what runs without a compiler or with MSMM_FUSED_KERNELS=0)."""

import mindspore as ms
import numpy as np
import pytest
import torch

import adapters.torch  # noqa: F401  (starts the runtime settings the shim needs)
from adapters.kernels import activation, build, norm
from adapters.torch.nn import functional as F
from tests.adapters.harness import check_function

pytestmark = pytest.mark.skipif(not (norm.AVAILABLE and activation.AVAILABLE),
                                reason="fused kernels not built here (no compiler or MSMM_FUSED_KERNELS=0)")

MODES = ("pynative", "jit")
SHAPES = [(1, 7), (3, 5, 37), (2, 3, 64)]  # one row, odd hidden size, a multiple of 16


def _inputs(*shapes, scale: float = 1.0):
    rng = np.random.default_rng(sum(map(sum, shapes)))
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]


# ---- norms -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rms_norm(shape, eps, mode):
    h = shape[-1]

    def fused(x, w):
        return norm.rms_norm(x, w, eps)

    check_function(fused, lambda x, w: torch.nn.functional.rms_norm(x, (h,), w, eps), _inputs(shape, (h,)), mode)


@pytest.mark.parametrize("mode", MODES)
def test_rms_norm_without_weight(mode):
    def fused(x):
        return F.rms_norm(x, (37,), None, 1e-6)

    check_function(fused, lambda x: torch.nn.functional.rms_norm(x, (37,), None, 1e-6), _inputs((3, 5, 37)), mode)


@pytest.mark.parametrize("mode", MODES)
def test_rms_norm_with_and_without_weight_in_one_graph(mode):
    def fused(x, w):
        return F.rms_norm(x, (37,), w, 1e-6) + F.rms_norm(x * 2.0, (37,), None, 1e-5)

    def reference(x, w):
        return torch.nn.functional.rms_norm(x, (37,), w, 1e-6) + torch.nn.functional.rms_norm(x * 2.0, (37,), None, 1e-5)

    check_function(fused, reference, _inputs((3, 5, 37), (37,)), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm(shape, eps, mode):
    h = shape[-1]
    x, w, b = _inputs(shape, (h,), (h,))

    def fused(x, w, b):
        return norm.layer_norm(x, w, b, eps)

    check_function(fused, lambda x, w, b: torch.nn.functional.layer_norm(x, (h,), w, b, eps), [x + 3.0, w, b], mode)


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_without_affine_goes_through_the_dispatch(mode):
    def fused(x):
        return F.layer_norm(x, (37,))

    check_function(fused, lambda x: torch.nn.functional.layer_norm(x, (37,)),
           _inputs((3, 5, 37)), mode)


@pytest.mark.parametrize("mode", MODES)
def test_norm_fallbacks(mode):
    """The composite kernels the fused ones replace (fp16/bf16, multi-dim shapes, no library)."""
    x, w, b = _inputs((3, 37), (37,), (37,))

    def rms_norm(x, w):
        return F._rms_norm_composite(x, (37,), w, 1e-6)

    def layer_norm(x, w, b):
        return F._layer_norm_legacy(x, (37,), w, b, 1e-5)

    check_function(rms_norm, lambda x, w: torch.nn.functional.rms_norm(x, (37,), w, 1e-6), [x, w], mode)
    check_function(layer_norm, lambda x, w, b: torch.nn.functional.layer_norm(x, (37,), w, b, 1e-5), [x, w, b], mode)


def test_large_inputs_split_over_threads():
    """Above 256k (norms) / 128k (activations) elements a call is split over the cores (the
    weight gradients sum 1100 rows in float32: absolute tolerance for their rounding)."""
    x, w, b = _inputs((1100, 256), (256,), (256,))
    check_function(lambda x, w: F.rms_norm(x, (256,), w, 1e-6),
           lambda x, w: torch.nn.functional.rms_norm(x, (256,), w, 1e-6), [x, w], "pynative", rtol=1e-4, atol=1e-3)
    check_function(lambda x, w, b: F.layer_norm(x, (256,), w, b),
           lambda x, w, b: torch.nn.functional.layer_norm(x, (256,), w, b), [x, w, b], "pynative", rtol=1e-4, atol=1e-3)
    check_function(F.silu_mul, lambda a, b: torch.nn.functional.silu(a) * b, [x[:600], x[500:]], "pynative")


def test_non_contiguous_views():
    """A transposed view reaches the kernels as the values it shows (MindSpore copies it first)."""
    x, = _inputs((4, 16, 6))
    view = ms.mint.transpose(ms.Tensor(x), 1, 2)
    want = torch.tensor(x).transpose(1, 2)
    np.testing.assert_allclose(F.rms_norm(view, (16,), None, 1e-6).asnumpy(),
                               torch.nn.functional.rms_norm(want, (16,), None, 1e-6).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.silu_mul(view, view).asnumpy(),
                               (torch.nn.functional.silu(want) * want).numpy(), rtol=1e-5, atol=1e-6)


def test_mismatched_shapes_raise_as_in_torch():
    x, w = _inputs((3, 8), (6,))
    with pytest.raises(Exception):
        F.rms_norm(ms.Tensor(x), (8,), ms.Tensor(w), 1e-6).asnumpy()
    with pytest.raises(Exception):
        F.layer_norm(ms.Tensor(x), (6,)).asnumpy()


def test_rms_norm_other_dtypes_and_shapes_use_the_composite():
    x, w = _inputs((2, 3, 8), (3, 8))
    got = F.rms_norm(ms.Tensor(x), (3, 8), ms.Tensor(w), 1e-6).asnumpy()
    want = torch.nn.functional.rms_norm(torch.tensor(x), (3, 8), torch.tensor(w), 1e-6).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    half = F.rms_norm(ms.Tensor(x).astype(ms.float16), (8,), None, 1e-6)
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32),
                               torch.nn.functional.rms_norm(torch.tensor(x).half(), (8,), None, 1e-6).float(),
                               rtol=2e-3, atol=2e-3)


# ---- activations -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_silu_mul(shape, mode):
    a, b = _inputs(shape, shape, scale=4.0)
    a.flat[:4] = [-100.0, -60.0, 60.0, 100.0]  # saturated sigmoid both ways
    check_function(F.silu_mul, lambda a, b: torch.nn.functional.silu(a) * b, [a, b], mode)


@pytest.mark.parametrize("mode", MODES)
def test_silu_mul_fallback_broadcasts(mode):
    a, b = _inputs((3, 5, 37), (37,))
    check_function(F.silu_mul, lambda a, b: torch.nn.functional.silu(a) * b, [a, b], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gelu(shape, mode):
    x, = _inputs(shape, scale=3.0)
    x.flat[:3] = [-30.0, 0.0, 30.0]
    check_function(F.gelu, torch.nn.functional.gelu, [x], mode)


@pytest.mark.parametrize("mode", MODES)
def test_gelu_tanh_keeps_the_legacy_kernel(mode):
    def tanh_gelu(x):
        return F.gelu(x, approximate="tanh")

    check_function(tanh_gelu, lambda x: torch.nn.functional.gelu(x, approximate="tanh"), _inputs((3, 37)), mode)


@pytest.mark.parametrize("mode", MODES)
def test_quick_gelu(mode):
    x, = _inputs((3, 5, 37), scale=3.0)
    check_function(F.quick_gelu, lambda x: x * torch.sigmoid(1.702 * x), [x], mode)


@pytest.mark.parametrize("mode", MODES)
def test_quick_gelu_fallback(mode):
    def composite(x):
        return F._quick_gelu_composite(x)

    check_function(composite, lambda x: x * torch.sigmoid(1.702 * x), _inputs((3, 37)), mode)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("MSMM_FUSED_KERNELS", "0")
    assert build.library("norm") is None and build.library("activation") is None
