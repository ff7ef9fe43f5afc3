"""Contract tests of adapters.torch math against real torch, in PyNative and graph mode.

One case exercises several APIs (one graph compile each): ``apis`` lists them all for
the coverage table.
"""
import numpy as np
import pytest

from tests.adapters import harness
from tests.adapters.harness import MODES, check, randn


def _positive(*shape, seed=0):
    return np.abs(randn(*shape, seed=seed)) + 0.5


def _ints(*shape, low=1, high=9, seed=0):
    return np.random.default_rng(seed).integers(low, high, shape).astype(np.int64)


CASES = [
    # (case, inputs, apis, options)
    ("arithmetic", [randn(3, 4), _positive(3, 4, seed=1)],
     ("torch.add", "torch.sub", "torch.subtract", "torch.mul", "torch.multiply", "torch.div",
      "torch.divide", "torch.true_divide", "torch.neg", "torch.negative", "Tensor.__add__",
      "Tensor.__sub__", "Tensor.__mul__", "Tensor.__truediv__"), {}),
    ("powers", [randn(3, 4), _positive(3, 4, seed=1)],
     ("torch.pow", "torch.sqrt", "torch.rsqrt", "torch.reciprocal", "torch.square"), {}),
    ("transcendental", [randn(3, 4), _positive(3, 4, seed=1)],
     ("torch.exp", "torch.log", "torch.log2", "torch.log1p", "torch.expm1", "torch.sin", "torch.cos",
      "torch.tanh", "torch.sigmoid", "torch.erf", "torch.abs"), {}),
    # integer-valued results: their gradients are zero (or 1 for remainder) on both sides
    ("rounding", [randn(3, 4), _positive(3, 4, seed=1)],
     ("torch.floor", "torch.ceil", "torch.round", "torch.trunc", "torch.sign", "torch.floor_divide",
      "torch.remainder", "torch.fmod"), dict(grad=False)),
    ("bounds", [randn(3, 4), randn(3, 4, seed=1) - 0.5, randn(4, seed=2) + 0.5],
     ("torch.clamp", "torch.clip", "torch.maximum", "torch.minimum"), {}),
    ("selection", [randn(3, 4), randn(3, 4, seed=1)],
     ("torch.where", "torch.masked_fill", "torch.lerp"), {}),
    ("predicates", [randn(3, 4) * 2],
     ("torch.isnan", "torch.isinf", "torch.isfinite"), dict(grad=False)),
    ("comparisons", [randn(3, 4), randn(3, 4, seed=1)],
     ("torch.eq", "torch.ne", "torch.lt", "torch.le", "torch.gt", "torch.ge", "torch.logical_and",
      "torch.logical_or", "torch.logical_not", "torch.logical_xor", "torch.isclose",
      "Tensor.__eq__", "Tensor.__lt__"), dict(grad=False)),
    ("promotion", [randn(3, 4), _ints(3, 4), _ints(3, 4, seed=1)],
     ("type promotion",), {}),
    ("reductions", [randn(2, 3, 4)],
     ("torch.sum", "torch.mean", "torch.prod", "torch.amax", "torch.amin", "torch.logsumexp",
      "torch.cumsum", "torch.cumprod"), {}),
    ("statistics", [randn(2, 3, 4)], ("torch.var", "torch.std", "torch.norm"), {}),
    ("extrema", [randn(4, 5)], ("torch.max", "torch.min", "torch.argmax", "torch.argmin"), {}),
    ("truth", [randn(4, 5)], ("torch.all", "torch.any"), dict(grad=False)),
    ("ordering", [randn(4, 5)], ("torch.topk", "torch.sort", "torch.argsort"), {}),
    ("products", [randn(3, 4), randn(4, 5, seed=1), randn(3, seed=2), randn(4, seed=3),
                  randn(2, 3, 4, seed=4), randn(2, 4, 5, seed=5)],
     ("torch.matmul", "torch.mm", "torch.bmm", "torch.baddbmm", "torch.outer", "Tensor.__matmul__"), {}),
    ("einsums", [randn(2, 2, 3, 4), randn(2, 2, 5, 4, seed=1), randn(2, 2, 5, 4, seed=2),
                 randn(6, seed=3), randn(5, seed=4)], ("torch.einsum",), {}),
    ("normalised", [randn(3, 4)], ("torch.softmax", "torch.log_softmax", "torch.tril", "torch.triu"), {}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case, inputs, apis, options", CASES, ids=[c[0] for c in CASES])
def test_math(case, inputs, apis, options, mode):
    check("math", case, inputs, mode=mode, api=apis[0], **options)
    for api in apis[1:]:
        harness.record(api, mode)


def test_where_indices():
    """``where(cond)`` = ``nonzero(cond, as_tuple=True)``: data-dependent shape, PyNative."""
    check("math", "where_indices", [randn(3, 4)], mode="pynative", grad=False, api="torch.where")


def test_allclose_equal():
    """Python bools out of tensors: PyNative only (a graph cannot branch on tensor data)."""
    check("math", "closeness", [randn(3, 4), randn(3, 4, seed=1)], mode="pynative",
          grad=False, api="torch.allclose")
    harness.record("torch.equal", "pynative")
