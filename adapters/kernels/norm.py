"""Fused float32 RMSNorm and LayerNorm over the last dim (``csrc/norm.cpp``), forward and backward.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
the CPU entries of ``F.rms_norm`` / ``F.layer_norm`` then keep their composite kernels.
"""
from __future__ import annotations

from typing import Optional

from mindspore import Tensor, ops

from .build import library
from .custom import THREADED, custom_op, first_dtype, first_shape, scalar

_LIBRARY = library("norm", THREADED)
AVAILABLE = _LIBRARY is not None


def _rms_norm_grad_shapes(x, weight, eps, dy):  # -> dx, dweight
    return x, weight


def _rms_norm_grad_dtypes(x, weight, eps, dy):
    return x, weight


def _layer_norm_grad_shapes(x, weight, eps, dy):  # -> dx, dweight, dbias
    return x, weight, weight


def _layer_norm_grad_dtypes(x, weight, eps, dy):
    return x, weight, weight


if AVAILABLE:
    _rms_norm_grad = custom_op(_LIBRARY, "RmsNormGrad", _rms_norm_grad_shapes, _rms_norm_grad_dtypes)
    _rms_norm_unweighted_grad = custom_op(_LIBRARY, "RmsNormUnweightedGrad", first_shape, first_dtype)
    _layer_norm_grad = custom_op(_LIBRARY, "LayerNormGrad", _layer_norm_grad_shapes, _layer_norm_grad_dtypes)


def _rms_norm_bprop(x, weight, eps, out, dout):
    dx, dweight = _rms_norm_grad(x, weight, eps, dout)
    return dx, dweight, ops.zeros_like(eps)


def _rms_norm_unweighted_bprop(x, eps, out, dout):
    return _rms_norm_unweighted_grad(x, eps, dout), ops.zeros_like(eps)


def _layer_norm_bprop(x, weight, bias, eps, out, dout):
    dx, dweight, dbias = _layer_norm_grad(x, weight, eps, dout)
    return dx, dweight, dbias, ops.zeros_like(eps)


if AVAILABLE:
    _rms_norm = custom_op(_LIBRARY, "RmsNorm", first_shape, first_dtype, _rms_norm_bprop)
    _rms_norm_unweighted = custom_op(_LIBRARY, "RmsNormUnweighted", first_shape, first_dtype, _rms_norm_unweighted_bprop)
    _layer_norm = custom_op(_LIBRARY, "LayerNorm", first_shape, first_dtype, _layer_norm_bprop)


def rms_norm(x: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` for float32 ``x [..., H]`` and ``weight [H]``."""
    if weight is None:
        return _rms_norm_unweighted(x, scalar(eps))
    return _rms_norm(x, weight, scalar(eps))


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``(x - mean) * rsqrt(var + eps) * weight + bias`` over the last dim of float32 ``x [..., H]``."""
    return _layer_norm(x, weight, bias, scalar(eps))
