"""torch Tensor methods whose MindSpore meaning differs, and their functional forms.

Tensors are plain MindSpore Tensors, so ``x.m(...)`` runs MindSpore's method ``m``.
Where that differs from torch (other meaning, missing, no CPU kernel, fails inside
``mindspore.jit``, gradient leaks through an integer cast, in-place op that does not
write), ``auto_convert`` rewrites the call to this module's function of the same name,
with the tensor first::

    x.m(*args, **kwargs)  ->  adapters.torch.tensor_methods.m(x, *args, **kwargs)

``DIFFERING`` maps each such method to what goes wrong (measured on MindSpore 2.10 CPU
against torch 2.13 by tests/adapters/test_methods.py); every key names a function here.
``NOT_REWRITTEN`` lists differences that a call rewrite cannot fix.
"""
from __future__ import annotations

from typing import Dict

import mindspore
from mindspore import mint, ops

from . import _creation, _math, _random, _shape

_PYNATIVE_NOOP = "PyNative CPU: returns a new tensor and leaves the tensor unchanged (no in-place write)"
_NO_CPU_KERNEL = "no CPU kernel for MindSpore's in-place op"

DIFFERING: Dict[str, str] = {
    # other meaning or signature
    "transpose": "graph mode reads transpose(a, b) as a full permutation (ValueError for 2 axes on >2-D)",
    "size": "MindSpore's Tensor.size is the element count (an int attribute), not a method returning the shape",
    "expand": "graph mode: expand(*sizes) fails (takes one tuple only)",
    "permute": "same values, but the CPU Transpose kernel keeps an 8-byte source index per element for the "
               "life of the compiled graph (32 MB in the small benchmark's training step); torch.permute "
               "copies swaps of two dims or two blocks of dims with the fused transpose kernel",
    "max": "graph mode: max(dim) returns the values only (the legacy numpy-style overload), no indices",
    "min": "graph mode: values only; PyNative: backward of min(dim) fails ('pointer[input_tensor] is null')",
    "argmax": "graph mode: argmax() without dim reduces the last axis instead of the flattened tensor",
    "softmax": "no dim= keyword (axis=)",
    "norm": "no p= keyword",
    "var": "signature var(axis, ddof, keepdims): unbiased= and correction= are rejected",
    "std": "signature std(axis, ddof, keepdims): unbiased= and correction= are rejected",
    "flip": "an int dim is rejected (ReverseV2 wants a tuple)",
    "squeeze": "squeeze(dim) of a dim whose size is not 1 raises (torch: no-op); squeeze(dim=d) is rejected",
    "repeat_interleave": "repeat_interleave(0) raises a TypeError (torch: an empty tensor)",
    "unbind": "graph mode: the backward of unbind of a computed tensor does not compile "
              "(Stack: 'All input must have the same data type', Ref[Tensor] vs Tensor)",
    "topk": "indices are int32 (torch: int64)",
    "sort": "indices are int32 (torch: int64); graph mode: no CPU kernel",
    "argsort": "indices are int32 (torch: int64); graph mode: no CPU kernel",
    # missing or without a CPU kernel
    "unflatten": "no such method",
    "log_softmax": "no such method",
    "detach": "no such method",
    "new_tensor": "no such method",
    "clone": "no CPU kernel ('The kernel Clone unregistered')",
    "repeat": "no CPU kernel ('repeat' is not supported on this device)",
    "roll": "no CPU kernel ('The kernel Roll unregistered')",
    "cumsum": "graph mode: no CPU kernel",
    "new_zeros": "new_zeros(2, 3) fails: the second positional argument is read as dtype",
    "new_ones": "new_ones(2, 3) fails: the second positional argument is read as dtype",
    "new_full": "'new_full method support Ascend only'",
    "new_empty": "new_empty(2, 3) fails like new_zeros",
    "to": "graph mode: to('cpu') fails; an integer target dtype lets gradients through",
    # gradients leak through integer casts: d(x.long().float())/dx is 1, torch's is 0
    "long": "gradient flows through the integer cast (torch: none)",
    "int": "gradient flows through the integer cast (torch: none)",
    "short": "gradient flows through the integer cast (torch: none)",
    "byte": "gradient flows through the integer cast (torch: none)",
    "type": "gradient flows through an integer cast (torch: none)",
    "type_as": "gradient flows through an integer cast (torch: none)",
    # in-place ops
    "add_": _PYNATIVE_NOOP,
    "sub_": _PYNATIVE_NOOP,
    "mul_": _PYNATIVE_NOOP,
    "div_": _PYNATIVE_NOOP,
    "exp_": _PYNATIVE_NOOP,
    "zero_": _NO_CPU_KERNEL,
    "fill_": _NO_CPU_KERNEL,
    "masked_fill_": _NO_CPU_KERNEL,
    "clamp_": _NO_CPU_KERNEL,
    "normal_": _NO_CPU_KERNEL,
    "uniform_": _NO_CPU_KERNEL,
    "pow_": "no such method",
    "copy_": "a Python number as the source raises a TypeError, a source of another shape is not broadcast",
    "amax": "no dim= keyword (axis=)",
    "floor_divide": "a number divisor has no CPU kernel (FloorDivScalar)",
    "sqrt_": "no such method",
}

NOT_REWRITTEN: Dict[str, str] = {
    "__getitem__": "x[0, :, idx] (an int and a tensor index separated by a slice): torch applies "
                   "the int first, giving (slice, idx) dims; MindSpore follows numpy and puts the "
                   "index dim first. Write x[0][:, idx].",
    "__iadd__": "x += y binds x to a new tensor (torch writes in place, which aliases see): "
                "use x.add_(y) (rewritten) where aliasing matters.",
    "tolist": "PyNative only: a compiled graph cannot hand tensor data to Python.",
}

_INTEGRAL = (mindspore.bool_, mindspore.uint8, mindspore.int8, mindspore.int16, mindspore.int32,
             mindspore.int64)


def _cast(input, dtype):
    """``astype`` with torch's gradient: none through integer or bool results."""
    if input.dtype == dtype:
        return input
    out = input.astype(dtype)
    return ops.stop_gradient(out) if dtype in _INTEGRAL else out


def _sizes(sizes: tuple) -> tuple:
    """``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` all mean (2, 3)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        return tuple(sizes[0])
    return tuple(sizes)


# ------------------------------------------------------------- other meaning or signature
transpose = _shape.transpose


def permute(input, *dims):
    """``x.permute(*dims)`` or ``x.permute(dims)``: ``torch.permute`` (its CPU kernel choice)."""
    return _shape.permute(input, _sizes(dims))


max = _math.max  # noqa: A001
min = _math.min  # noqa: A001
argmax = _math.argmax
softmax = _math.softmax
log_softmax = _math.log_softmax
norm = _math.norm
var = _math.var
std = _math.std
flip = _shape.flip
topk = _math.topk
sort = _math.sort
argsort = _math.argsort
unflatten = _shape.unflatten
detach = _shape.detach
clone = _shape.clone
unbind = _shape.unbind
squeeze = _shape.squeeze
repeat_interleave = _shape.repeat_interleave
roll = _shape.roll
cumsum = _math.cumsum
amax = _math.amax
floor_divide = _math.floor_divide


def size(input, dim=None):
    """The shape as a tuple, or the length of ``dim``."""
    return tuple(input.shape) if dim is None else input.shape[dim]


def expand(input, *sizes):
    """Broadcast to ``sizes``; -1 keeps a dim."""
    return _shape.broadcast_to(input, _sizes(sizes))


@ops.constexpr
def _repeat_shapes(shape: tuple, repeats: tuple) -> tuple:
    return (1,) * (len(repeats) - len(shape)) + shape


def repeat(input, *repeats):
    """Tile ``input`` ``repeats`` times per dim (leading new dims allowed), as torch's repeat."""
    repeats = _sizes(repeats)
    shape = _repeat_shapes(tuple(input.shape), repeats)
    if 0 in repeats or 0 in shape:  # an empty result: MindSpore's CPU Tile backward leaves the
        # input's gradient unwritten (garbage); torch's is zeros
        out = ops.zeros(tuple(s * r for s, r in zip(shape, repeats)), input.dtype)
        return out + input.sum() * 0 if ops.is_floating_point(input) else out
    return mint.tile(input.reshape(shape), repeats)


# ------------------------------------------------------------------------ new tensors


def new_zeros(input, *size, dtype=None, device=None, requires_grad: bool = False):
    return _creation.zeros(_sizes(size), dtype=input.dtype if dtype is None else dtype)


def new_ones(input, *size, dtype=None, device=None, requires_grad: bool = False):
    return _creation.ones(_sizes(size), dtype=input.dtype if dtype is None else dtype)


def new_empty(input, *size, dtype=None, device=None, requires_grad: bool = False):
    return new_zeros(input, *size, dtype=dtype)


def new_full(input, size, fill_value, *, dtype=None, device=None, requires_grad: bool = False):
    return _creation.full(size, fill_value, dtype=input.dtype if dtype is None else dtype)


def new_tensor(input, data, *, dtype=None, device=None, requires_grad: bool = False):
    """``data`` as a tensor of ``input``'s dtype (unless ``dtype`` is given)."""
    return _creation.tensor(data, dtype=input.dtype if dtype is None else dtype)


# ---------------------------------------------------------------------------- dtypes


def to(input, *args, dtype=None, device=None, non_blocking: bool = False, copy: bool = False,
       memory_format=None):
    """``to(dtype)``, ``to(other)`` (its dtype), ``to(device)``, ``to(device, dtype)``;
    devices are ignored (MindSpore places tensors itself)."""
    for arg in args:
        if isinstance(arg, mindspore.Tensor):
            dtype = arg.dtype
        elif isinstance(arg, mindspore.dtype.Type):
            dtype = arg
    return input if dtype is None else _cast(input, dtype)


def type(input, dtype, non_blocking: bool = False):  # noqa: A001
    return _cast(input, dtype)


def type_as(input, other):
    return _cast(input, other.dtype)


def long(input, memory_format=None):
    return _cast(input, mindspore.int64)


def int(input, memory_format=None):  # noqa: A001
    return _cast(input, mindspore.int32)


def short(input, memory_format=None):
    return _cast(input, mindspore.int16)


def byte(input, memory_format=None):
    return _cast(input, mindspore.uint8)


# ---------------------------------------------------------------------------- in place
# MindSpore's ``copy_`` writes in place in PyNative and graph mode: each in-place method
# computes out of place and copies the result back, so aliases (parameters) see it.
# Values match torch; gradients through them do not (PyNative rejects the version bump of
# a saved input, graph mode drops the path): fine for init code and under no_grad, write
# out-of-place ops in differentiable code.


def add_(input, other, *, alpha=1):
    return input.copy_(_math.add(input, other, alpha=alpha))


def sub_(input, other, *, alpha=1):
    return input.copy_(_math.sub(input, other, alpha=alpha))


def mul_(input, other):
    return input.copy_(_math.mul(input, other))


def div_(input, other, *, rounding_mode=None):
    return input.copy_(_math.div(input, other, rounding_mode=rounding_mode))


def exp_(input):
    return input.copy_(_math.exp(input))


def pow_(input, exponent):
    return input.copy_(_math.pow(input, exponent))


def sqrt_(input):
    return input.copy_(_math.sqrt(input))


def copy_(input, src, non_blocking: bool = False):
    """Write ``src`` (a tensor broadcast to ``input``'s shape and cast to its dtype, or a
    number) into ``input``."""
    if not isinstance(src, mindspore.Tensor):
        return input.copy_(_creation.full_like(input, src))
    return input.copy_(_shape.broadcast_to(src.astype(input.dtype), tuple(input.shape)))


def zero_(input):
    return input.copy_(_creation.zeros_like(input))


def fill_(input, value):
    return input.copy_(_creation.full_like(input, value))


def masked_fill_(input, mask, value):
    return input.copy_(_math.masked_fill(input, mask, value))


def clamp_(input, min=None, max=None):  # noqa: A002
    return input.copy_(_math.clamp(input, min, max))


def normal_(input, mean: float = 0.0, std: float = 1.0, *, generator=None):
    return input.copy_(_random.randn_like(input) * std + mean)


def uniform_(input, a: float = 0.0, b: float = 1.0, *, generator=None):
    return input.copy_(_random.rand_like(input) * (b - a) + a)


def _on_tensors_only(name: str, form):
    """``form`` for tensors; any other receiver keeps its own method, so a rewrite of
    ``lst.sort()`` or ``module.to(dtype)`` (auto_convert cannot see types) stays correct.
    Under ``mindspore.jit`` the test folds away at compile time."""

    def method(input, *args, **kwargs):
        if isinstance(input, mindspore.Tensor):
            return form(input, *args, **kwargs)
        return getattr(input, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = form.__doc__
    return method


for _name in DIFFERING:
    globals()[_name] = _on_tensors_only(_name, globals()[_name])
del _name

__all__ = ["DIFFERING", "NOT_REWRITTEN"] + sorted(DIFFERING)
