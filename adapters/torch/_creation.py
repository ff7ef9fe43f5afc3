"""Tensor creation of adapters.torch: ``tensor``, ``zeros``, ``arange``, ``eye``, ...

torch's dtype rules: Python ints give int64, Python floats give float32 (the default
dtype), bools give bool; numpy arrays and tensors keep their dtype. ``device=``,
``pin_memory=`` and ``requires_grad=`` are accepted and ignored (MindSpore places
tensors itself and differentiates with ``mindspore.grad``).
"""
from __future__ import annotations

import builtins
from typing import Optional, Sequence

import mindspore
import numpy as np
from mindspore import mint, ops
from mindspore.ops import constexpr

from ._dispatch import kernel, register

__all__ = ["tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty", "arange",
           "linspace", "zeros_like", "ones_like", "full_like", "empty_like", "eye"]

_DEFAULT_FLOAT = mindspore.float32


@constexpr
def _scalar_dtype(value):
    """torch's dtype for a Python scalar or nested list of them."""
    kinds = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, builtins.bool):
            kinds.add("b")
        elif isinstance(item, builtins.int):
            kinds.add("i")
        elif isinstance(item, builtins.float):
            kinds.add("f")
        else:
            raise TypeError(f"torch.tensor: unsupported element {item!r} of type {type(item).__name__}")
    if "f" in kinds:
        return _DEFAULT_FLOAT
    if "i" in kinds:
        return mindspore.int64
    return mindspore.bool_ if kinds else _DEFAULT_FLOAT


def _size(size: tuple) -> tuple:
    """``zeros(2, 3)`` and ``zeros((2, 3))`` both mean shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def tensor(data, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False):
    """A new tensor holding a copy of ``data`` (Python scalars/lists, numpy array, tensor)."""
    if isinstance(data, mindspore.Tensor):  # a copy cut from the graph, as torch's
        out = ops.stop_gradient(ops.deepcopy(data))
        return out if dtype is None else out.astype(dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        array = np.array(data)
        return mindspore.Tensor(array, dtype=dtype)
    return mindspore.Tensor(data, dtype=_scalar_dtype(data) if dtype is None else dtype)


def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor, without a copy when it already is one of ``dtype``."""
    if isinstance(data, mindspore.Tensor):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, np.ndarray) and dtype is None:
        return mindspore.Tensor.from_numpy(np.ascontiguousarray(data))
    return tensor(data, dtype=dtype)


def from_numpy(ndarray: np.ndarray):
    """A tensor sharing memory with ``ndarray`` (PyNative only: numpy is host-side)."""
    return mindspore.Tensor.from_numpy(ndarray)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False):
    return mint.zeros(_size(size), dtype=_DEFAULT_FLOAT if dtype is None else dtype)


def ones(*size, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False):
    return mint.ones(_size(size), dtype=_DEFAULT_FLOAT if dtype is None else dtype)


def empty(*size, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False,
          memory_format=None):
    """Uninitialised in torch; zeros here (MindSpore has no uninitialised CPU buffer op)."""
    return zeros(*size, dtype=dtype)


@register("full", "CPU", note="ops.fill: mint.full has no PyNative CPU kernel")
def _full_cpu(size, fill_value, dtype):
    return ops.fill(dtype, size, fill_value)


@register("full", "Ascend", tested=False)
def _full_ascend(size, fill_value, dtype):
    return mint.full(size, fill_value, dtype=dtype)


_full = kernel("full")


def full(size: Sequence[int], fill_value, *, dtype=None, device=None, requires_grad: bool = False,
         pin_memory: bool = False):
    """``size`` filled with ``fill_value``; the dtype follows the value as in torch."""
    if dtype is None:
        dtype = fill_value.dtype if isinstance(fill_value, mindspore.Tensor) else _scalar_dtype(fill_value)
    return _full(tuple(size), fill_value, dtype)


@constexpr
def _arange_dtype(start, end, step):
    floats = [v for v in (start, end, step) if isinstance(v, builtins.float)]
    return _DEFAULT_FLOAT if floats else mindspore.int64


def _item(value):
    """A Python number from a number or a 0-d tensor (``arange(x.sum())``: PyNative only)."""
    return value.item() if isinstance(value, mindspore.Tensor) else value


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False):
    """``[start, end)`` by ``step``; int64 for integer arguments, else float32."""
    start, end, step = _item(start), _item(end), _item(step)
    if end is None:
        start, end = 0, start
    out_dtype = _arange_dtype(start, end, step) if dtype is None else dtype
    if out_dtype in (mindspore.int64, mindspore.int32, mindspore.int16, mindspore.int8, mindspore.uint8):
        return ops.arange(start, end, step, dtype=mindspore.int64).astype(out_dtype)
    # float steps: computed in float64 as torch does, then cast
    return ops.arange(builtins.float(start), builtins.float(end), builtins.float(step),
                      dtype=mindspore.float64).astype(out_dtype)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False):
    out = ops.linspace(builtins.float(_item(start)), builtins.float(_item(end)), steps)
    return out.astype(_DEFAULT_FLOAT if dtype is None else dtype)


def zeros_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None):
    return mint.zeros(input.shape, dtype=input.dtype if dtype is None else dtype)


def ones_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None):
    return mint.ones(input.shape, dtype=input.dtype if dtype is None else dtype)


def empty_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None):
    """Zeros (see :func:`empty`)."""
    return zeros_like(input, dtype=dtype)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad: bool = False,
              memory_format=None):
    """Unlike :func:`full`, the dtype is the input's, as in torch."""
    return _full(input.shape, fill_value, input.dtype if dtype is None else dtype)


def eye(n: int, m: Optional[int] = None, *, dtype=None, device=None, requires_grad: bool = False):
    return mint.eye(n, n if m is None else m, dtype=_DEFAULT_FLOAT if dtype is None else dtype)
