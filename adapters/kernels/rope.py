"""Fused float32 rotary position embedding (``csrc/rope.cpp``), forward and backward,
optionally fused with moving the heads in front of the sequence.

``x * cos + rotate_half(x) * sin`` for ``x [B, H, L, D]``, or for ``x [B, L, H, D]`` with the
result in ``[B, H, L, D]`` (the layout attention wants after the q/k projections), in one
pass instead of a transpose copy and five elementwise kernels. The tables cos/sin are per
position, ``[B|1, L, D]``: 1D RoPE, M-RoPE and the ViT's 2D RoPE alike.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.rotary_embedding`` then keeps its composite kernel.
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore
from mindspore import Tensor
from mindspore.ops import constexpr

from .build import library
from .custom import THREADED, custom_op, first_dtype

_LIBRARY = library("rope", THREADED)
AVAILABLE = _LIBRARY is not None


def _heads_first_shape(x, cos, sin):  # [B, L, H, D] -> [B, H, L, D]
    return [x[0], x[2], x[1], x[3]]


def _same_shape(x, cos, sin):
    return x


def _tables_shape(x, cos, sin, dy):
    return cos, sin


def _tables_dtype(x, cos, sin, dy):
    return cos, sin


if AVAILABLE:
    _grad = custom_op(_LIBRARY, "RotaryGrad", _same_shape, first_dtype)
    _heads_first_grad = custom_op(_LIBRARY, "RotaryHeadsFirstGrad", _heads_first_shape, first_dtype)
    _table_grad = custom_op(_LIBRARY, "RotaryTableGrad", _tables_shape, _tables_dtype)
    _heads_first_table_grad = custom_op(_LIBRARY, "RotaryHeadsFirstTableGrad", _tables_shape, _tables_dtype)


def _rotary_bprop(x, cos, sin, out, dout):
    dcos, dsin = _table_grad(x, cos, sin, dout)
    return _grad(dout, cos, sin), dcos, dsin


def _heads_first_bprop(x, cos, sin, out, dout):
    dcos, dsin = _heads_first_table_grad(x, cos, sin, dout)
    return _heads_first_grad(dout, cos, sin), dcos, dsin


if AVAILABLE:
    _rotary = custom_op(_LIBRARY, "Rotary", _same_shape, first_dtype, _rotary_bprop)
    _rotary_heads_first = custom_op(_LIBRARY, "RotaryHeadsFirst", _heads_first_shape, first_dtype,
                                    _heads_first_bprop)


@constexpr
def _table_shape(x_shape, table_shape, transpose_heads: bool) -> Optional[Tuple[int, int, int]]:
    """The tables' shape as the kernel's [Bc, L, D] if they broadcast against x the way it
    reads them (one row per position, shared by the heads, batch 1 or B), else None."""
    if len(x_shape) != 4 or x_shape[3] % 2:
        return None
    batch, length, dim = x_shape[0], x_shape[1 if transpose_heads else 2], x_shape[3]
    shape = tuple(table_shape)
    if transpose_heads and len(shape) == 3:
        shape = (shape[0], 1) + shape[1:]
    shape = (1,) * (4 - len(shape)) + shape
    if len(shape) != 4 or shape[1] != 1 or shape[2:] != (length, dim) or shape[0] not in (1, batch):
        return None
    return shape[0], length, dim


def supports(x: Tensor, cos: Tensor, sin: Tensor, transpose_heads: bool) -> bool:
    """Whether :func:`rotary_embedding` serves these inputs: float32 ``x`` [B, H, L, D] (or
    [B, L, H, D] with ``transpose_heads``) and float32 cos/sin of one shape broadcasting as
    [B|1, 1, L, D] (with ``transpose_heads``: [B|1, L, D])."""
    if not AVAILABLE or x.dtype != mindspore.float32 or cos.dtype != mindspore.float32:
        return False
    if sin.dtype != mindspore.float32 or cos.shape != sin.shape:
        return False
    return _table_shape(x.shape, cos.shape, transpose_heads) is not None


def rotary_embedding(x: Tensor, cos: Tensor, sin: Tensor, transpose_heads: bool = False) -> Tensor:
    """``x * cos + rotate_half(x) * sin`` for inputs :func:`supports` accepts; with
    ``transpose_heads`` x is [B, L, H, D] and the result [B, H, L, D]."""
    shape = _table_shape(x.shape, cos.shape, transpose_heads)
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    if transpose_heads:
        return _rotary_heads_first(x, cos, sin)
    return _rotary(x, cos, sin)
