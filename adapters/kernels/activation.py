"""Fused float32 activations (``csrc/activation.cpp``), forward and backward: ``silu(a) * b``
(SwiGLU), exact GELU and quick GELU.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
the CPU entries in ``adapters.torch.nn.functional`` then keep their composite kernels.
"""
from __future__ import annotations

from mindspore import Tensor

from .build import library
from .custom import THREADED, custom_op, first_dtype, first_shape

_LIBRARY = library("activation", THREADED)
AVAILABLE = _LIBRARY is not None


def _pair_shapes(a, b, dy):  # -> da, db
    return a, b


def _pair_dtypes(a, b, dy):
    return a, b


if AVAILABLE:
    _silu_mul_grad = custom_op(_LIBRARY, "SiluMulGrad", _pair_shapes, _pair_dtypes)
    _gelu_grad = custom_op(_LIBRARY, "GeluErfGrad", first_shape, first_dtype)
    _quick_gelu_grad = custom_op(_LIBRARY, "QuickGeluGrad", first_shape, first_dtype)


def _silu_mul_bprop(a, b, out, dout):
    return _silu_mul_grad(a, b, dout)


def _gelu_bprop(x, out, dout):
    return (_gelu_grad(x, dout),)


def _quick_gelu_bprop(x, out, dout):
    return (_quick_gelu_grad(x, dout),)


if AVAILABLE:
    _silu_mul = custom_op(_LIBRARY, "SiluMul", first_shape, first_dtype, _silu_mul_bprop)
    _gelu = custom_op(_LIBRARY, "GeluErf", first_shape, first_dtype, _gelu_bprop)
    _quick_gelu = custom_op(_LIBRARY, "QuickGelu", first_shape, first_dtype, _quick_gelu_bprop)


def silu_mul(a: Tensor, b: Tensor) -> Tensor:
    """``silu(a) * b`` for float32 tensors of one shape."""
    return _silu_mul(a, b)


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU of a float32 tensor."""
    return _gelu(x)


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)`` of a float32 tensor."""
    return _quick_gelu(x)
