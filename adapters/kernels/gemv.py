"""Fused float32 ``linear`` for inputs of few rows (``csrc/gemv.cpp``): decoding's
matrix-vector products, with a ``bprop`` of plain matmuls.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.linear`` then keeps MindSpore's MatMul for every shape.
"""
from __future__ import annotations

from typing import Optional

import mindspore
from mindspore import Tensor, mint

from .build import library
from .custom import custom_op, first_dtype

_LIBRARY = library("gemv", ("-fopenmp-simd",))
AVAILABLE = _LIBRARY is not None
MAX_ROWS = 8  # csrc/gemv.cpp's kMaxRows: inputs with more rows take MindSpore's MatMul


def _out_shape(x, w, *bias):
    return list(x[:-1]) + [w[0]]


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def _gemv_bprop(x, w, out, dout):
    dy = _rows(dout)
    return mint.matmul(dy, w).reshape(x.shape), mint.matmul(dy.T, _rows(x))


def _gemv_bias_bprop(x, w, b, out, dout):
    dy = _rows(dout)
    return mint.matmul(dy, w).reshape(x.shape), mint.matmul(dy.T, _rows(x)), dy.sum(0)


if AVAILABLE:
    _gemv = custom_op(_LIBRARY, "Gemv", _out_shape, first_dtype, _gemv_bprop)
    _gemv_bias = custom_op(_LIBRARY, "GemvBias", _out_shape, first_dtype, _gemv_bias_bprop)


def serves(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    """Whether the fused kernel serves ``linear(x, weight, bias)``: float32, at most
    ``MAX_ROWS`` rows, a 2-D weight."""
    rows = 1
    for size in x.shape[:-1]:
        rows *= size
    # the kernel reads K from x and N from weight: other widths / bias shapes (read out of
    # bounds, no error) go to MindSpore's MatMul, which raises torch's error or broadcasts
    return (AVAILABLE and rows <= MAX_ROWS and len(weight.shape) == 2 and len(x.shape) >= 1
            and weight.shape[1] == x.shape[-1] and x.dtype == mindspore.float32
            and weight.dtype == mindspore.float32
            and (bias is None or (bias.dtype == mindspore.float32 and tuple(bias.shape) == (weight.shape[0],))))


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x @ weight.T (+ bias)`` for float32 ``x [..., K]`` of at most ``MAX_ROWS`` rows."""
    if bias is None:
        return _gemv(x, weight)
    return _gemv_bias(x, weight, bias)

