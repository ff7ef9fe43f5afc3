"""Swapping two dims as a blocked copy (``csrc/transpose.cpp``), forward and backward.

Any ``transpose(x, a, b)`` (a < b) of an N-D tensor is, after free reshapes, the swap of
dims 1 and 3 of ``[A, P, M, Q, C]`` (A: the dims before a, P = dim a, M: the dims between,
Q = dim b, C: the dims after b). The kernel copies rows of C with memcpy when C is at least
4 (the attention layouts [B, L, H, D] <-> [B, H, L, D]) and square tiles of the P x Q planes
otherwise; MindSpore's CPU Transpose steps a scalar index per element. The swap is its own
inverse, so the backward is the same copy of the output gradient (its own C entry point).

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``torch.transpose`` then keeps ``mint.transpose``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore
from mindspore import Tensor
from mindspore.ops import constexpr

from .build import library
from .custom import THREADED, custom_op, first_dtype

_LIBRARY = library("transpose", THREADED)
AVAILABLE = _LIBRARY is not None

# Elements from which the kernel beats MindSpore's Transpose in a jit'd forward + backward
# (measured: benchmarks/fused_kernels.py; below, a Custom call's own cost outweighs the copy).
MIN_ELEMENTS = 4096

_DTYPES = (mindspore.float32, mindspore.int32, mindspore.uint32)


def _swapped_shape(x):  # [A, P, M, Q, C] -> [A, Q, M, P, C]
    return [x[0], x[3], x[2], x[1], x[4]]


if AVAILABLE:
    _swap_grad = custom_op(_LIBRARY, "SwapDimsGrad", _swapped_shape, first_dtype)


def _swap_bprop(x, out, dout):
    return (_swap_grad(dout),)


if AVAILABLE:
    _swap = custom_op(_LIBRARY, "SwapDims", _swapped_shape, first_dtype, _swap_bprop)


def _product(dims) -> int:
    size = 1
    for d in dims:
        size *= d
    return size


@constexpr
def _plan(shape, dim0: int, dim1: int, dtype) -> Optional[Tuple[tuple, tuple]]:
    """(the kernel's [A, P, M, Q, C] input shape, the result's shape), or None when the kernel
    does not serve this call: a dtype other than float32/int32/uint32, fewer than
    :data:`MIN_ELEMENTS` elements, dims that swap with themselves, or out-of-range dims."""
    rank = len(shape)
    if dtype not in _DTYPES or rank < 2 or not (-rank <= dim0 < rank and -rank <= dim1 < rank):
        return None
    a, b = sorted((dim0 % rank, dim1 % rank))
    if a == b or shape[a] == 1 or shape[b] == 1 or _product(shape) < MIN_ELEMENTS:
        return None
    five = (_product(shape[:a]), shape[a], _product(shape[a + 1:b]), shape[b], _product(shape[b + 1:]))
    out = list(shape)
    out[a], out[b] = out[b], out[a]
    return five, tuple(out)


def supports(x: Tensor, dim0: int, dim1: int) -> bool:
    """Whether :func:`swap_dims` serves ``transpose(x, dim0, dim1)``."""
    return AVAILABLE and _plan(x.shape, dim0, dim1, x.dtype) is not None


def swap_dims(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """``x`` with dims ``dim0`` and ``dim1`` swapped (a copy), for calls :func:`supports` accepts."""
    five, out = _plan(x.shape, dim0, dim1, x.dtype)
    return _swap(x.reshape(five)).reshape(out)
