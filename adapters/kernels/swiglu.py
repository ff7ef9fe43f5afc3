"""SwiGLU's gate and up projections for inputs of few rows in one kernel (``csrc/swiglu.cpp``):
decoding's ``silu(x Wg^T) * (x Wu^T)`` (two GEMVs and SiluMul), with a ``bprop`` of plain
matmuls.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.swiglu_linear`` then keeps two ``linear`` calls and ``silu_mul``.
"""
from __future__ import annotations

from typing import Optional

import mindspore
from mindspore import Tensor, mint, ops

from .build import library
from .custom import custom_op, first_dtype

_LIBRARY = library("swiglu", ("-fopenmp-simd",))
AVAILABLE = _LIBRARY is not None
MAX_ROWS = 8  # csrc/swiglu.cpp's kMaxRows


def _out_shape(x, wg, wu):
    return list(x[:-1]) + [wg[0]]


def _swiglu_bprop(x, wg, wu, out, dout):
    rows = x.reshape(-1, x.shape[-1])
    dy = dout.reshape(-1, dout.shape[-1])
    a, b = mint.matmul(rows, wg.T), mint.matmul(rows, wu.T)
    s = ops.sigmoid(a)
    da = dy * b * s * (1.0 + a * (1.0 - s))
    db = dy * a * s
    dx = (mint.matmul(da, wg) + mint.matmul(db, wu)).reshape(x.shape)
    return dx, mint.matmul(da.T, rows), mint.matmul(db.T, rows)


if AVAILABLE:
    _swiglu = custom_op(_LIBRARY, "SwiGLULinear", _out_shape, first_dtype, _swiglu_bprop)


def serves(x: Tensor, gate_weight: Tensor, gate_bias: Optional[Tensor], up_weight: Tensor,
           up_bias: Optional[Tensor]) -> bool:
    """Whether the kernel serves ``swiglu_linear``: float32, no biases, at most ``MAX_ROWS``
    rows, weights [F, K] for x [..., K]."""
    if not AVAILABLE or gate_bias is not None or up_bias is not None or len(x.shape) < 1:
        return False
    if x.dtype != mindspore.float32 or gate_weight.dtype != mindspore.float32 or up_weight.dtype != mindspore.float32:
        return False
    rows = 1
    for size in x.shape[:-1]:
        rows *= size
    return (rows <= MAX_ROWS and len(gate_weight.shape) == 2 and tuple(up_weight.shape) == tuple(gate_weight.shape)
            and gate_weight.shape[1] == x.shape[-1])


def swiglu_linear(x: Tensor, gate_weight: Tensor, up_weight: Tensor) -> Tensor:
    """``silu(x Wg^T) * (x Wu^T)`` for inputs :func:`serves` accepts."""
    return _swiglu(x, gate_weight, up_weight)
