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

# case -> methods it exercises (the case calls them as MindSpore's own methods)
AGREEING = {
    "view": ("view",), "reshape": ("reshape",), "permute": ("permute",), "shape": ("shape",),
    "dim": ("dim",), "ndim": ("ndim",), "numel": ("numel",), "flatten": ("flatten",),
    "unsqueeze": ("unsqueeze",), "squeeze": ("squeeze",), "expand_as": ("expand_as",),
    "float_": ("float",), "half": ("half",), "double": ("double",), "bool_": ("bool",),
    "contiguous": ("contiguous",), "sum_": ("sum",), "mean": ("mean",), "chunk": ("chunk",),
    "split": ("split",), "unbind": ("unbind",), "index_select": ("index_select",),
    "gather": ("gather",), "item": ("item",), "masked_fill": ("masked_fill",),
    "pow_": ("pow", "__pow__", "__rpow__"), "sqrt": ("sqrt",), "rsqrt": ("rsqrt",), "exp": ("exp",),
    "log": ("log",), "abs_": ("abs", "__neg__"), "neg": ("neg",), "sigmoid": ("sigmoid",),
    "tanh": ("tanh",), "clamp": ("clamp",), "arithmetic": ("mul", "add", "sub", "div"),
    "div_rounding": ("div",), "matmul": ("matmul", "__matmul__"), "T": ("T",), "mT": ("mT",),
    "eq": ("eq", "ne", "gt", "lt", "ge", "le"), "logical": ("logical_and", "logical_not", "logical_or"),
    "tril": ("tril", "triu"), "all_any": ("all", "any"), "is_floating_point": ("is_floating_point",),
    "narrow": ("narrow",), "t": ("t",), "swapaxes": ("swapaxes", "swapdims"), "where": ("where",),
    "type_conversions_chain": ("float", "half"), "getitem": ("__getitem__",),
    "getitem_mask": ("__getitem__",), "setitem": ("__setitem__",), "setitem_mask": ("__setitem__",),
    "copy_": ("copy_",),
}

# differing method -> case of its rewrite
REWRITTEN = {name: f"{name}_rewritten" for name in tensor_methods.DIFFERING}
REWRITTEN.update({name: "long_rewritten" for name in ("long", "int", "short", "byte")})
REWRITTEN.update({"type": "type_rewritten", "type_as": "type_rewritten", "normal_": "random_inplace_rewritten",
                  "uniform_": "random_inplace_rewritten"})
REWRITTEN.update({name: "inplace_rewritten" for name in ("add_", "sub_", "mul_", "div_", "exp_", "zero_",
                                                          "fill_", "masked_fill_", "clamp_", "pow_", "sqrt_")})

# outputs with no gradient path in torch (integer results or constants)
NO_GRAD = {"to_other", "tolist", "eq", "logical", "all_any", "bool_", "float_", "argmax_rewritten",
           "argsort_rewritten", "new_zeros_rewritten", "new_ones_rewritten", "new_full_rewritten",
           "new_empty_rewritten", "new_tensor_rewritten", "random_inplace_rewritten",
           # in-place rewrites compute out of place and copy_ back: values as torch, but
           # MindSpore's autograd does not follow copy_ (see tensor_methods)
           "inplace_rewritten"}
# half-precision results: fp16 rounding (rel. 2**-11) on both sides, compared at 1e-3
LOOSE = {"half", "type_conversions_chain", "to_rewritten"}


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
        harness._record(name, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(AGREEING))
def test_method_agrees(case, mode):
    _check(case, mode, [f"Tensor.{name}" for name in AGREEING[case]])


REWRITE_CASES = sorted(set(REWRITTEN.values()))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", REWRITE_CASES)
def test_differing_method_rewrite(case, mode):
    _check(case, mode, [f"Tensor.{name}" for name, c in sorted(REWRITTEN.items()) if c == case])


def test_every_differing_method_has_a_form_and_a_case():
    ref, _ = load_cases("methods")
    for name in tensor_methods.DIFFERING:
        assert callable(getattr(tensor_methods, name, None)), f"tensor_methods.{name} is missing"
        assert hasattr(ref, REWRITTEN[name]), f"no case {REWRITTEN[name]} for {name}"
    assert not set(tensor_methods.DIFFERING) & {m for ms in AGREEING.values() for m in ms}


def test_tolist_pynative():
    """tolist hands data to Python: PyNative only (NOT_REWRITTEN)."""
    check("methods", "tolist", [INPUTS["x"]], mode="pynative", grad=False, api="Tensor.tolist")


def test_getitem_int_slice_tensor_differs():
    """x[0, :, idx]: MindSpore orders the dims as numpy, torch applies the int first
    (NOT_REWRITTEN). Fails when MindSpore starts to agree, to update the table."""
    with pytest.raises(AssertionError, match="Mismatched elements"):
        check("methods", "getitem_int_slice_tensor", [INPUTS["x"], INPUTS["i"]], mode="pynative")
