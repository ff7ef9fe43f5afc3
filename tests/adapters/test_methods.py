"""torch Tensor methods called on MindSpore Tensors, against real torch, in both modes.

Methods whose MindSpore meaning agrees with torch are checked as they are. The others
are listed in ``adapters.torch.tensor_methods.DIFFERING``; for them the test checks the
call as auto_convert rewrites it (``x.m(*a)`` -> ``tensor_methods.m(x, *a)``), with
``methods`` bound to ``tensor_methods`` on adapters and to the real methods on torch.
"""
import numpy as np
import pytest

from adapters.torch import tensor_methods
from tests.adapters import harness
from tests.adapters.harness import MODES, check, load_cases, randn

INPUTS = dict(x=randn(2, 3, 4), y=randn(2, 3, 4, seed=1), v=randn(4, seed=2),
              i=np.random.default_rng(0).integers(0, 9, (2, 3)).astype(np.int64),
              p=np.abs(randn(2, 3, 4, seed=3)) + 0.5)

# case -> methods it exercises as MindSpore's own methods, grouped (one compile per group)
AGREEING = {
    "agreeing_shapes": {
        "view": ("view",), "reshape": ("reshape",), "shape": ("shape",),
        "dim": ("dim",), "ndim": ("ndim",), "numel": ("numel",), "flatten": ("flatten",),
        "unsqueeze": ("unsqueeze",), "expand_as": ("expand_as",),
        "narrow": ("narrow",), "t": ("t",), "swapaxes": ("swapaxes", "swapdims"), "T": ("T",), "mT": ("mT",),
        "chunk": ("chunk",), "split": ("split",), "contiguous": ("contiguous",)},
    "agreeing_math": {
        "pow_": ("pow", "__pow__", "__rpow__"), "sqrt": ("sqrt",), "rsqrt": ("rsqrt",), "exp": ("exp",),
        "log": ("log",), "abs_": ("abs", "__neg__"), "neg": ("neg",), "sigmoid": ("sigmoid",),
        "tanh": ("tanh",), "clamp": ("clamp",), "arithmetic": ("mul", "add", "sub", "div"),
        "div_rounding": ("div",), "matmul": ("matmul", "__matmul__"), "where": ("where",),
        "tril": ("tril", "triu"), "sum_": ("sum",), "mean": ("mean",), "masked_fill": ("masked_fill",),
        "item": ("item",), "is_floating_point": ("is_floating_point",)},
    "agreeing_indexing": {
        "index_select": ("index_select",), "gather": ("gather",), "getitem": ("__getitem__",),
        "getitem_mask": ("__getitem__",), "setitem": ("__setitem__",), "setitem_mask": ("__setitem__",)},
    "agreeing_dtypes": {
        "float_": ("float",), "half": ("half",), "double": ("double",), "type_conversions_chain": ("float", "half"),
        "bool_": ("bool",), "eq": ("eq", "ne", "gt", "lt", "ge", "le"),
        "logical": ("logical_and", "logical_not", "logical_or"), "all_any": ("all", "any")},
}

# group of rewritten cases -> the differing methods they exercise
REWRITTEN = {
    "rewritten_shapes": ("transpose", "permute", "size", "expand", "flip", "unflatten", "repeat", "roll", "clone", "detach",
                         "unbind", "squeeze", "repeat_interleave"),
    "rewritten_reductions": ("max", "min", "argmax", "amax", "softmax", "log_softmax", "norm", "var", "std", "topk",
                             "sort", "argsort", "cumsum"),
    "rewritten_dtypes": ("to", "long", "int", "short", "byte", "type", "type_as"),
    "rewritten_without_grad": ("floor_divide",),
    "rewritten_constructors": ("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"),
    # in-place rewrites compute out of place and copy_ back: values as torch, but
    # MindSpore's autograd does not follow copy_ (see tensor_methods); random fills are
    # constant here (std 0, empty range) so they compare exactly
    "rewritten_inplace": ("add_", "sub_", "mul_", "div_", "exp_", "zero_", "fill_", "masked_fill_", "clamp_",
                          "pow_", "sqrt_", "normal_", "uniform_", "copy_"),
}

NO_GRAD = {"rewritten_constructors", "rewritten_inplace", "rewritten_without_grad"}
# half-precision results: fp16 rounding (rel. 2**-11) on both sides, compared at 1e-3
LOOSE = {"agreeing_dtypes", "rewritten_dtypes"}


class _TorchMethods:
    """The torch side of a rewritten case: ``methods.m(x, *a)`` is ``x.m(*a)``."""

    def __getattr__(self, name):
        return lambda tensor, *args, **kwargs: getattr(tensor, name)(*args, **kwargs)


def setup_module():
    ref, ms = load_cases("methods")
    ref.methods, ms.methods = _TorchMethods(), tensor_methods


def _check(case: str, mode: str, api) -> None:
    fn = getattr(load_cases("methods")[0], case)
    inputs = [INPUTS[name] for name in fn.__code__.co_varnames[:fn.__code__.co_argcount]]
    tolerance = dict(rtol=1e-3, atol=1e-3) if case in LOOSE else {}
    check("methods", case, inputs, mode=mode, grad=case not in NO_GRAD, api=api[0], **tolerance)
    for name in api[1:]:
        harness.record(name, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group", sorted(AGREEING))
def test_methods_agree(group, mode):
    _check(group, mode, sorted({f"Tensor.{m}" for ms in AGREEING[group].values() for m in ms}))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group", sorted(REWRITTEN))
def test_differing_methods_rewritten(group, mode):
    _check(group, mode, [f"Tensor.{name}" for name in REWRITTEN[group]])


def test_tables_are_consistent():
    """Every differing method has a functional form and a rewrite case; no method is
    listed both as agreeing and as differing; every group calls the cases it claims."""
    rewritten = [name for names in REWRITTEN.values() for name in names]
    assert sorted(rewritten) == sorted(tensor_methods.DIFFERING)
    for name in tensor_methods.DIFFERING:
        assert callable(getattr(tensor_methods, name, None)), f"tensor_methods.{name} is missing"
    agreeing = {m for cases in AGREEING.values() for ms in cases.values() for m in ms}
    assert not agreeing & set(tensor_methods.DIFFERING)
    ref, _ = load_cases("methods")
    for group, cases in AGREEING.items():
        called = set(getattr(ref, group).__code__.co_names)
        assert set(cases) <= called, f"{group} does not call {set(cases) - called}"


def test_rewrites_leave_other_receivers_alone():
    """auto_convert rewrites by method name: non-tensors keep their own methods."""
    values = [3, 1, 2]
    tensor_methods.sort(values)
    assert values == [1, 2, 3]
    assert tensor_methods.max(np.array([1, 5, 2])) == 5
    assert tensor_methods.clone(_Shaped()) == "cloned"


class _Shaped:
    def clone(self):
        return "cloned"


def test_tolist_pynative():
    """tolist hands data to Python: PyNative only (NOT_REWRITTEN)."""
    check("methods", "tolist", [INPUTS["x"]], mode="pynative", grad=False, api="Tensor.tolist")


def test_getitem_int_slice_tensor_differs():
    """x[0, :, idx]: MindSpore orders the dims as numpy, torch applies the int first
    (NOT_REWRITTEN). Fails when MindSpore starts to agree, to update the table."""
    with pytest.raises(AssertionError, match="Mismatched elements"):
        check("methods", "getitem_int_slice_tensor", [INPUTS["x"], INPUTS["i"]], mode="pynative")
