"""adapters.torch.nn.init against torch.nn.init.

Init runs eagerly (before compile), so it has no graph-mode form. Fans and gains must equal
torch's exactly; random fills come from another RNG, so their distributions are compared
with torch's own fill of the same shape by bounds and moments on large tensors.
"""
import math

import mindspore as ms
import numpy as np
import pytest
import torch as torch_ref

import adapters.torch as torch_ms
from tests.adapters import harness

INIT = "torch.nn.init."
SHAPE = (384, 512)  # 196k samples: standard error of the std ~0.2%


def _ms_param(shape, dtype=ms.float32):
    return torch_ms.nn.Parameter(ms.Tensor(np.zeros(shape), dtype))


@pytest.mark.parametrize("shape", [(5, 3), (6, 4, 3, 3), (8, 2, 2, 3, 3), (7, 1)])
def test_fan_in_and_fan_out(shape):
    want = torch_ref.nn.init._calculate_fan_in_and_fan_out(torch_ref.zeros(shape))
    assert torch_ms.nn.init._calculate_fan_in_and_fan_out(_ms_param(shape)) == want
    harness.record(INIT + "_calculate_fan_in_and_fan_out", "pynative")


def test_fan_of_vector_fails_like_torch():
    with pytest.raises(ValueError) as ref_error:
        torch_ref.nn.init._calculate_fan_in_and_fan_out(torch_ref.zeros(4))
    with pytest.raises(ValueError) as ms_error:
        torch_ms.nn.init._calculate_fan_in_and_fan_out(_ms_param((4,)))
    assert str(ms_error.value) == str(ref_error.value)


@pytest.mark.parametrize("nonlinearity,param", [
    ("linear", None), ("conv2d", None), ("conv3d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)])
def test_calculate_gain(nonlinearity, param):
    assert torch_ms.nn.init.calculate_gain(nonlinearity, param) == torch_ref.nn.init.calculate_gain(nonlinearity, param)
    harness.record(INIT + "calculate_gain", "pynative")


@pytest.mark.parametrize("args", [("gelu", None), ("leaky_relu", "0.1")])
def test_calculate_gain_errors_like_torch(args):
    with pytest.raises(ValueError) as ref_error:
        torch_ref.nn.init.calculate_gain(*args)
    with pytest.raises(ValueError) as ms_error:
        torch_ms.nn.init.calculate_gain(*args)
    assert str(ms_error.value) == str(ref_error.value)


# (init function, kwargs, shape): random fills
RANDOM = [
    ("uniform_", {"a": -0.5, "b": 2.0}, SHAPE),
    ("normal_", {"mean": 1.5, "std": 0.2}, SHAPE),
    ("trunc_normal_", {"std": 0.02, "a": -0.03, "b": 0.03}, SHAPE),
    ("trunc_normal_", {"mean": 0.5, "std": 1.0, "a": 0.0, "b": 1.5}, SHAPE),
    ("xavier_uniform_", {"gain": 2.0}, SHAPE),
    ("xavier_normal_", {}, (64, 32, 3, 3)),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, SHAPE),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, (128, 64, 2, 3, 3)),
    ("kaiming_normal_", {}, SHAPE),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "tanh"}, (128, 96, 4, 4)),
]


@pytest.mark.parametrize("name,kwargs,shape", RANDOM, ids=[f"{r[0]}-{i}" for i, r in enumerate(RANDOM)])
def test_random_fill_distribution(name, kwargs, shape):
    torch_ref.manual_seed(0)
    torch_ms.manual_seed(0)
    want = getattr(torch_ref.nn.init, name)(torch_ref.empty(shape), **kwargs).numpy().ravel()
    param = _ms_param(shape)
    out = getattr(torch_ms.nn.init, name)(param, **kwargs)
    assert out is param, "init functions fill in place and return their argument"
    got = param.asnumpy().ravel()
    scale = want.std()
    assert abs(got.mean() - want.mean()) < 0.02 * scale + 1e-3 * abs(want.mean())
    assert abs(got.std() - scale) < 0.02 * scale
    if name.endswith("uniform_") or name == "trunc_normal_":  # bounded: same support as torch's
        assert got.min() >= want.min() - 0.01 * scale and got.max() <= want.max() + 0.01 * scale
        assert got.min() < want.min() + 0.02 * scale and got.max() > want.max() - 0.02 * scale
    else:  # normal: compare tails through quantiles
        np.testing.assert_allclose(np.quantile(got, [0.01, 0.5, 0.99]), np.quantile(want, [0.01, 0.5, 0.99]),
                                   atol=0.03 * scale)
    harness.record(INIT + name, "pynative")


@pytest.mark.parametrize("name,args", [("constant_", (0.25,)), ("ones_", ()), ("zeros_", ()), ("eye_", ())])
def test_deterministic_fills_equal_torch(name, args):
    want = getattr(torch_ref.nn.init, name)(torch_ref.empty(3, 5), *args).numpy()
    got = getattr(torch_ms.nn.init, name)(_ms_param((3, 5)), *args).asnumpy()
    np.testing.assert_array_equal(got, want)
    harness.record(INIT + name, "pynative")


def test_fill_keeps_dtype_and_follows_manual_seed():
    param = _ms_param((64, 64), ms.float16)
    torch_ms.nn.init.normal_(param, std=0.5)
    assert param.dtype == ms.float16
    torch_ms.manual_seed(3)
    first = torch_ms.nn.Linear(16, 32).weight.asnumpy()
    second = torch_ms.nn.Linear(16, 32).weight.asnumpy()
    torch_ms.manual_seed(3)
    np.testing.assert_array_equal(torch_ms.nn.Linear(16, 32).weight.asnumpy(), first)
    assert not np.array_equal(first, second)


def _project(layer, x):
    return layer(x)


def test_init_after_compile_reaches_the_graph():
    """Init writes in place (``copy_``), so a graph compiled before it reads the new values."""
    layer = torch_ms.nn.Linear(4, 3)
    x = ms.Tensor(np.ones((2, 4), np.float32))
    run = ms.jit(_project)
    assert np.abs(run(layer, x).asnumpy()).sum() > 0
    torch_ms.nn.init.zeros_(layer.weight)
    torch_ms.nn.init.constant_(layer.bias, 0.5)
    np.testing.assert_array_equal(run(layer, x).asnumpy(), np.full((2, 3), 0.5, np.float32))
