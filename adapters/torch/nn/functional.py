"""torch.nn.functional over MindSpore kernels.

Every function keeps torch's signature, defaults and result dtypes and works in PyNative
and under ``mindspore.jit``. Ops whose best kernel depends on the device (conv, layer
norm, RMS norm, GELU, dropout, attention) bind their kernel from the dispatch table at
import time; the rest are compositions of kernels that exist on every device.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import mindspore
import numpy as np
from mindspore import Tensor, mint, ops
from mindspore.ops import constexpr

from ...kernels import activation as fused_activation
from ...kernels import attention as fused_attention
from ...kernels import cache as fused_cache
from ...kernels import gemv as fused_gemv
from ...kernels import norm as fused_norm
from ...kernels import rope as fused_rope
from ...kernels import swiglu as fused_swiglu
from .._dispatch import kernel, register
from .._dtype import finfo

__all__ = [
    "linear", "conv2d", "conv3d",
    "layer_norm", "rms_norm", "group_norm", "normalize",
    "gelu", "quick_gelu", "silu", "silu_mul", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "logsigmoid",
    "cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits",
    "scaled_dot_product_attention", "rotary_embedding", "write_slots", "write_rows", "project_qkv", "swiglu_linear",
    "interpolate", "pad", "embedding", "dropout", "one_hot", "pixel_shuffle", "pixel_unshuffle",
]

_IntOrTuple = Union[int, Sequence[int]]


def _ntuple(value: _IntOrTuple, n: int) -> Tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


# ---- linear and convolution ----------------------------------------------------------
@register("linear", "CPU", note="fused float32 GEMV for at most 8 rows (decoding; adapters/kernels/csrc/gemv.cpp); "
                               "float32 rows: one MatMul(transpose_b) on the rows [.., K] -> [M, K]; else mint linear")
def _linear_cpu(input, weight, bias):
    if 0 in input.shape or 0 in weight.shape:
        return _empty_linear(input, weight, bias)
    if fused_gemv.serves(input, weight, bias):
        return fused_gemv.linear(input, weight, bias)
    if _matmul_rows_serves(input, weight, bias):
        return _linear_rows(input, weight, bias)
    return mint.nn.functional.linear(input, weight, bias)


_matmul_nt = ops.MatMul(transpose_b=True)
# A bias over the last dim of rows [M, N] (NCHW: dim 1 of [N, C, H, W] and [N, C, D, H, W]).
# ``out + bias`` is a broadcasting Add, whose CPU kernel keeps two 8-byte input indices per
# output element for the life of the compiled graph (ArithmeticCpuTypeFunc::InitBroadCast at
# its first launch): 90 MB on the small benchmark's training step. BiasAdd keeps none.
_bias_add = ops.BiasAdd()
_bias_add_3d = ops.BiasAdd(data_format="NCDHW")


def _matmul_rows_serves(input, weight, bias) -> bool:
    return (len(input.shape) >= 2 and len(weight.shape) == 2 and input.shape[-1] == weight.shape[1]
            and input.dtype == mindspore.float32 and weight.dtype == mindspore.float32
            and (bias is None or (bias.dtype == mindspore.float32 and tuple(bias.shape) == (weight.shape[0],))))


def _linear_rows(input, weight, bias):
    """``input @ weight.T + bias`` as one ``MatMul(transpose_b=True)`` over the rows of ``input``
    (a free reshape to [M, K] and back). MindSpore's ``Dense`` (mint's linear) does the same
    forward, but its backward transposes the output gradient and the weight gradient with
    ``Transpose`` kernels (two per weight, 0.2 ms each at the LM head of the tiny train step);
    MatMul's own backward is two MatMuls with transpose flags and no copies. The bias is a
    ``BiasAdd`` (not a broadcasting ``Add``: see ``_bias_add``)."""
    rows = input if len(input.shape) == 2 else input.reshape(-1, input.shape[-1])
    out = _matmul_nt(rows, weight)
    if bias is not None:
        out = _bias_add(out, bias)
    return out if len(input.shape) == 2 else out.reshape(tuple(input.shape[:-1]) + (weight.shape[0],))


def _empty_linear(input, weight, bias):
    """A linear with no rows or no input features, as torch: ``bias`` (or zeros) in the output,
    zero gradients for weight and bias (MindSpore's CPU MatMul leaves the output of an empty
    product, here the weight gradient of zero rows, unwritten)."""
    if input.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input has {input.shape[-1]} features, weight expects {weight.shape[-1]}")
    out = ops.zeros(tuple(input.shape[:-1]) + (weight.shape[0],), input.dtype) + weight.sum() * 0
    return out if bias is None else out + bias


@register("linear", "Ascend", tested=False, note="mint linear")
def _linear_ascend(input, weight, bias):
    return mint.nn.functional.linear(input, weight, bias)


_linear = kernel("linear")


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``input @ weight.T + bias``; weight is ``[out_features, in_features]``."""
    return _linear(input, weight, bias)


def _conv_padding(padding: Union[str, _IntOrTuple], kernel_size: Tuple[int, ...],
                  dilation: Tuple[int, ...], stride: Tuple[int, ...]) -> Tuple[int, ...]:
    """torch conv padding as MindSpore's ``(begin_0, end_0, begin_1, end_1, ...)``."""
    n = len(kernel_size)
    if padding == "valid":
        return (0,) * (2 * n)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' is not supported for strided convolutions")
        pads = ()
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)  # torch puts the odd extra element at the end
            pads += (total // 2, total - total // 2)
        return pads
    if isinstance(padding, str):
        raise ValueError(f"Invalid padding string {padding!r}, should be one of ('valid', 'same')")
    pads = ()
    for p in _ntuple(padding, n):
        pads += (p, p)
    return pads


def _check_conv(input: Tensor, weight: Tensor, groups: int, n: int) -> None:
    if input.ndim not in (n + 1, n + 2):
        raise ValueError(f"conv{n}d: expected a {n + 1}D (unbatched) or {n + 2}D (batched) input, "
                         f"got shape {tuple(input.shape)}")
    channels = input.shape[-n - 1]
    if channels != weight.shape[1] * groups:
        raise ValueError(f"conv{n}d: input has {channels} channels, weight {tuple(weight.shape)} with "
                         f"groups={groups} expects {weight.shape[1] * groups}")


def _add_channel_bias(out, bias, bias_add):
    """``out [N, C, ...] + bias [C]``: float32 through ``bias_add`` (no per-element index table,
    see ``_bias_add``), other dtypes (BiasAdd has no float16 CPU kernel) a broadcasting add."""
    if out.dtype == mindspore.float32 and bias.dtype == mindspore.float32:
        return bias_add(out, bias)
    return out + bias.reshape((1, -1) + (1,) * (len(out.shape) - 2))


@register("conv2d", "CPU", note="ops.Conv2D (legacy kernel), explicit padding")
def _conv2d_cpu(input, weight, bias, stride, padding, dilation, groups):
    kernel_size = tuple(weight.shape[2:])
    pads = _conv_padding(padding, kernel_size, dilation, stride)
    conv = ops.Conv2D(weight.shape[0], kernel_size, pad_mode="pad", pad=pads, stride=stride,
                      dilation=dilation, group=groups)
    out = conv(input, weight)
    return out if bias is None else _add_channel_bias(out, bias, _bias_add)


@register("conv2d", "Ascend", tested=False, note="mint.nn.functional.conv2d")
def _conv2d_ascend(input, weight, bias, stride, padding, dilation, groups):
    return mint.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)


@register("conv3d", "CPU", note="ops.Conv3D (legacy kernel), explicit padding")
def _conv3d_cpu(input, weight, bias, stride, padding, dilation, groups):
    kernel_size = tuple(weight.shape[2:])
    pads = _conv_padding(padding, kernel_size, dilation, stride)
    conv = ops.Conv3D(weight.shape[0], kernel_size, pad_mode="pad", pad=pads, stride=stride,
                      dilation=dilation, group=groups)
    out = conv(input, weight)
    return out if bias is None else _add_channel_bias(out, bias, _bias_add_3d)


@register("conv3d", "Ascend", tested=False, note="mint.nn.functional.conv3d")
def _conv3d_ascend(input, weight, bias, stride, padding, dilation, groups):
    return mint.nn.functional.conv3d(input, weight, bias, stride, padding, dilation, groups)


_conv2d = kernel("conv2d")
_conv3d = kernel("conv3d")


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _IntOrTuple = 1,
           padding: Union[str, _IntOrTuple] = 0, dilation: _IntOrTuple = 1, groups: int = 1) -> Tensor:
    """2D convolution of ``(N, C_in, H, W)`` (or unbatched ``(C_in, H, W)``) with
    ``weight [C_out, C_in / groups, kH, kW]``; ``padding`` may be ``"same"`` or ``"valid"``."""
    _check_conv(input, weight, groups, 2)
    unbatched = input.ndim == 3
    x = input.expand_dims(0) if unbatched else input
    out = _conv2d(x, weight, bias, _ntuple(stride, 2), padding, _ntuple(dilation, 2), groups)
    return out.squeeze(0) if unbatched else out


def conv3d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _IntOrTuple = 1,
           padding: Union[str, _IntOrTuple] = 0, dilation: _IntOrTuple = 1, groups: int = 1) -> Tensor:
    """3D convolution of ``(N, C_in, D, H, W)`` with ``weight [C_out, C_in / groups, kD, kH, kW]``."""
    _check_conv(input, weight, groups, 3)
    unbatched = input.ndim == 4
    x = input.expand_dims(0) if unbatched else input
    out = _conv3d(x, weight, bias, _ntuple(stride, 3), padding, _ntuple(dilation, 3), groups)
    return out.squeeze(0) if unbatched else out


# ---- normalization -------------------------------------------------------------------
def _float32(tensor: Optional[Tensor]) -> bool:
    """The fused CPU kernels serve float32 tensors (None stands for an absent weight)."""
    return tensor is None or tensor.dtype == mindspore.float32


def _fused_norm(input: Tensor, normalized_shape: Tuple[int, ...], weight: Optional[Tensor],
                bias: Optional[Tensor] = None) -> bool:
    """The fused norms serve float32 over the last dim, with affine parameters of that size
    (anything else goes to the composite, which raises torch's errors)."""
    if not (fused_norm.AVAILABLE and len(normalized_shape) == 1 and input.shape[-1] == normalized_shape[0]):
        return False
    for param in (weight, bias):
        if param is not None and tuple(param.shape) != normalized_shape:
            return False
    return _float32(input) and _float32(weight) and _float32(bias)


def _layer_norm_legacy(input, normalized_shape, weight, bias, eps):
    axis = input.ndim - len(normalized_shape)
    weight = ops.ones(normalized_shape, input.dtype) if weight is None else weight
    bias = ops.zeros(normalized_shape, input.dtype) if bias is None else bias
    return ops.LayerNorm(axis, axis, eps)(input, weight, bias)[0]


@register("layer_norm", "CPU", note="fused float32 kernel over the last dim (adapters/kernels/csrc/norm.cpp); "
                                    "else ops.LayerNorm (legacy kernel)")
def _layer_norm_cpu(input, normalized_shape, weight, bias, eps):
    if not _fused_norm(input, normalized_shape, weight, bias):
        return _layer_norm_legacy(input, normalized_shape, weight, bias, eps)
    weight = ops.ones(normalized_shape, input.dtype) if weight is None else weight
    bias = ops.zeros(normalized_shape, input.dtype) if bias is None else bias
    return fused_norm.layer_norm(input, weight, bias, eps)


@register("layer_norm", "Ascend", tested=False, note="mint.nn.functional.layer_norm")
def _layer_norm_ascend(input, normalized_shape, weight, bias, eps):
    return mint.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)


_layer_norm = kernel("layer_norm")


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the last ``len(normalized_shape)`` dims (biased variance)."""
    return _layer_norm(input, tuple(_ntuple(normalized_shape, 1)), weight, bias, eps)


def _rms_norm_composite(input, normalized_shape, weight, eps):
    dims = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    x = input.astype(mindspore.float32) if input.dtype in (mindspore.float16, mindspore.bfloat16) else input
    out = (x * ops.rsqrt(x.pow(2).mean(dims, keep_dims=True) + eps)).astype(input.dtype)
    return out if weight is None else (out * weight).astype(input.dtype)  # torch: input's dtype


@register("rms_norm", "CPU", note="fused float32 kernel over the last dim (adapters/kernels/csrc/norm.cpp); else "
                                  "composite x * rsqrt(mean(x^2) + eps) * weight, fp32 math for fp16/bf16")
def _rms_norm_cpu(input, normalized_shape, weight, eps):
    if _fused_norm(input, normalized_shape, weight):
        return fused_norm.rms_norm(input, weight, eps)
    return _rms_norm_composite(input, normalized_shape, weight, eps)


@register("rms_norm", "Ascend", tested=False, note="ops.rms_norm fused kernel when weight is given")
def _rms_norm_ascend(input, normalized_shape, weight, eps):
    if weight is None:
        return _rms_norm_composite(input, normalized_shape, weight, eps)
    return ops.rms_norm(input, weight.astype(input.dtype), eps)[0]


_rms_norm = kernel("rms_norm")


def rms_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
             eps: Optional[float] = None) -> Tensor:
    """RMS normalization over the last dims; ``eps=None`` means ``finfo(input.dtype).eps`` as torch."""
    eps = finfo(input.dtype).eps if eps is None else eps
    return _rms_norm(input, tuple(_ntuple(normalized_shape, 1)), weight, eps)


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Normalize ``(N, C, *)`` over groups of ``C / num_groups`` channels, then per-channel affine."""
    n, c = input.shape[0], input.shape[1]
    if c % num_groups:
        raise ValueError(f"group_norm: {c} channels are not divisible by num_groups={num_groups}")
    x = input.reshape(n, num_groups, -1)
    mean = x.mean(-1, keep_dims=True)
    var = (x - mean).pow(2).mean(-1, keep_dims=True)
    out = ((x - mean) * ops.rsqrt(var + eps)).reshape(input.shape)
    affine_shape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(affine_shape)
    if bias is not None:
        out = out + bias.reshape(affine_shape)
    return out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``input / max(||input||_p along dim, eps)``."""
    norm = input.abs().pow(p).sum(dim, keepdims=True).pow(1.0 / p)
    return input / ops.clamp(norm, min=eps)


# ---- activations ---------------------------------------------------------------------
@register("gelu", "CPU", note="exact GELU of float32: fused kernel (adapters/kernels/csrc/activation.cpp); "
                              "else ops.gelu (legacy kernel)")
def _gelu_cpu(input, approximate):
    if fused_activation.AVAILABLE and approximate == "none" and _float32(input):
        return fused_activation.gelu(input)
    return ops.gelu(input, approximate=approximate)


@register("gelu", "Ascend", tested=False, note="mint.nn.functional.gelu")
def _gelu_ascend(input, approximate):
    return mint.nn.functional.gelu(input, approximate=approximate)


_gelu = kernel("gelu")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU, exact (``"none"``, erf) or the ``"tanh"`` approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _gelu(input, approximate)


def _quick_gelu_composite(input):
    return input * ops.sigmoid(1.702 * input)


@register("quick_gelu", "CPU", note="fused float32 kernel (adapters/kernels/csrc/activation.cpp); "
                                    "else input * sigmoid(1.702 * input)")
def _quick_gelu_cpu(input):
    if fused_activation.AVAILABLE and _float32(input):
        return fused_activation.quick_gelu(input)
    return _quick_gelu_composite(input)


@register("quick_gelu", "Ascend", tested=False, note="input * sigmoid(1.702 * input)")
def _quick_gelu_ascend(input):
    return _quick_gelu_composite(input)


_quick_gelu = kernel("quick_gelu")


def quick_gelu(input: Tensor) -> Tensor:
    """``input * sigmoid(1.702 * input)`` (CLIP's GELU approximation), one fused kernel where the
    device has it.

    Not a torch function: auto_convert rewrites ``x * torch.sigmoid(1.702 * x)`` into it.
    """
    return _quick_gelu(input)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return ops.silu(input)


@register("silu_mul", "CPU", note="fused float32 kernel (adapters/kernels/csrc/activation.cpp) for operands "
                                  "of one shape; else silu(input) * other")
def _silu_mul_cpu(input, other):
    if fused_activation.AVAILABLE and isinstance(other, Tensor) and input.shape == other.shape \
            and _float32(input) and _float32(other):
        return fused_activation.silu_mul(input, other)
    return ops.silu(input) * other


@register("silu_mul", "Ascend", tested=False, note="silu(input) * other")
def _silu_mul_ascend(input, other):
    return ops.silu(input) * other


_silu_mul = kernel("silu_mul")


def silu_mul(input: Tensor, other: Tensor) -> Tensor:
    """``silu(input) * other`` (SwiGLU's gating), one fused kernel where the device has it.

    Not a torch function: auto_convert rewrites ``F.silu(a) * b`` into it.
    """
    return _silu_mul(input, other)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return ops.relu(input)


def sigmoid(input: Tensor) -> Tensor:
    return ops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    return ops.tanh(input)


def _softmax_dim(ndim: int) -> int:
    """torch's implicit dim when ``dim=None`` (deprecated there, kept for old code)."""
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """Softmax along ``dim``; ``dtype`` casts the input first, as torch."""
    x = input if dtype is None else input.astype(dtype)
    return ops.softmax(x, _softmax_dim(x.ndim) if dim is None else dim)


def log_softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    x = input if dtype is None else input.astype(dtype)
    return ops.log_softmax(x, _softmax_dim(x.ndim) if dim is None else dim)


# ---- losses --------------------------------------------------------------------------
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction!r} is not a valid value for reduction ('none', 'mean', 'sum')")


def _nll(logp: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
         reduction: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-element NLL of log-probabilities ``logp (N, C, *)`` at ``target (N, *)``.

    Returns ``(reduced loss, keep mask, per-element class weight)``.
    """
    keep = target != ignore_index
    index = ops.where(keep, target, ops.zeros_like(target))
    picked = ops.gather_elements(logp, 1, index.expand_dims(1)).squeeze(1)
    w = keep.astype(logp.dtype)
    if weight is not None:
        w = w * ops.gather(weight, index, 0)
    loss = -picked * w
    if reduction == "mean":
        return loss.sum() / w.sum(), keep, w
    return _reduce(loss, reduction), keep, w


def _check_reduction(size_average, reduce, reduction: str) -> str:
    """``reduction``, or torch's reading of the deprecated ``size_average``/``reduce`` (either
    given: None counts as True; both true: mean, reduce only: sum, reduce false: none)."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        return ("mean" if size_average else "sum") if reduce else "none"
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction!r} is not a valid value for reduction ('none', 'mean', 'sum')")
    return reduction


def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities ``(N, C, *)`` or ``(C,)`` at class indices.

    ``mean`` divides by the summed weight of the non-ignored targets (their count without
    ``weight``); all targets ignored gives NaN, as torch.
    """
    reduction = _check_reduction(size_average, reduce, reduction)
    unbatched = input.ndim == 1
    logp, target = (input.expand_dims(0), target.expand_dims(0)) if unbatched else (input, target)
    loss = _nll(logp, target, weight, ignore_index, reduction)[0]
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy of logits ``(N, C, *)`` or ``(C,)`` with class indices or class probabilities.

    Index targets: ``ignore_index`` positions contribute nothing and ``mean`` divides by the
    (weighted) count of the others. ``label_smoothing`` mixes in the uniform distribution
    exactly as torch (the smoothing term is weighted by ``weight`` too).
    """
    reduction = _check_reduction(size_average, reduce, reduction)
    unbatched = input.ndim == 1
    if unbatched:
        input, target = input.expand_dims(0), target.expand_dims(0)
    n_classes = input.shape[1]
    logp = ops.log_softmax(input, 1)
    weight_shape = (1, n_classes) + (1,) * (input.ndim - 2)
    if tuple(target.shape) == tuple(input.shape):  # class probabilities
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / n_classes
        per_class = logp * target
        if weight is not None:
            per_class = per_class * weight.reshape(weight_shape)
        loss = -per_class.sum(1)
        if reduction == "mean":
            loss = loss.sum() / (logp.size // n_classes)
        else:
            loss = _reduce(loss, reduction)
    else:
        loss, keep, w = _nll(logp, target, weight, ignore_index, reduction)
        if label_smoothing > 0:
            per_class = logp if weight is None else logp * weight.reshape(weight_shape)
            smooth = -per_class.sum(1) * keep.astype(logp.dtype)
            smooth = smooth.sum() / w.sum() if reduction == "mean" else _reduce(smooth, reduction)
            loss = (1 - label_smoothing) * loss + smooth * (label_smoothing / n_classes)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
             reduction: str = "mean") -> Tensor:
    reduction = _check_reduction(size_average, reduce, reduction)
    return _reduce((input - target).pow(2), reduction)


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, with ``min(x, 0) = (x - |x|) / 2``
    (mint's LogSigmoid and ZerosLike have no CPU kernel)."""
    magnitude = mint.abs(input)
    return (input - magnitude) / 2 - mint.log1p(mint.exp(-magnitude))


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Optional[Tensor] = None) -> Tensor:
    """``-w [pos_weight * t * log s(x) + (1 - t) * log(1 - s(x))]``, from ``logsigmoid`` (stable)."""
    reduction = _check_reduction(size_average, reduce, reduction)
    log_p, log_not_p = logsigmoid(input), logsigmoid(-input)
    positive = target * log_p if pos_weight is None else pos_weight * target * log_p
    loss = -(positive + (1 - target) * log_not_p)
    return _reduce(loss if weight is None else loss * weight, reduction)


# ---- attention -----------------------------------------------------------------------
def _repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``(B, Hkv, S, D)`` -> ``(B, Hkv * n_rep, S, D)``, each head repeated ``n_rep`` times in place."""
    if n_rep == 1:
        return x
    shape = tuple(x.shape)
    x = ops.broadcast_to(x.expand_dims(-3), shape[:-2] + (n_rep,) + shape[-2:])
    return x.reshape(shape[:-3] + (shape[-3] * n_rep,) + shape[-2:])


def _attention_math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """softmax(q k^T * scale + mask) v; a row whose every score is masked gives zeros, as torch."""
    if enable_gqa:
        key = _repeat_kv(key, query.shape[-3] // key.shape[-3])
        value = _repeat_kv(value, query.shape[-3] // value.shape[-3])
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = ops.matmul(query, ops.swapaxes(key, -2, -1)) * scale  # (B, H, L, S)
    neg_inf = float("-inf")
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        causal = ops.arange(length).reshape(length, 1) >= ops.arange(source).reshape(1, source)
        scores = ops.masked_fill(scores, ops.logical_not(causal), neg_inf)
    if attn_mask is not None:
        if attn_mask.dtype == mindspore.bool_:
            scores = ops.masked_fill(scores, ops.logical_not(attn_mask), neg_inf)
        else:
            scores = scores + attn_mask
    if attn_mask is None:  # the causal band always keeps key 0: no row is fully masked
        probs = ops.softmax(scores, -1)
    else:
        dead = (scores == neg_inf).all(-1, keep_dims=True)  # fully masked rows
        probs = ops.softmax(ops.masked_fill(scores, dead, 0.0), -1)
        probs = ops.masked_fill(probs, dead, 0.0)
    if dropout_p > 0.0:
        probs = dropout(probs, dropout_p, True)
    return ops.matmul(probs, value)


@register("scaled_dot_product_attention", "CPU",
          note="fused masked softmax between two BatchMatMuls (adapters/kernels/attention.py) for float32 4D "
               "inputs, else composite math attention")
def _sdpa_cpu(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    # scale 0: the fused backward gets an additive mask's gradient by unscaling (0 / 0)
    if fused_attention.supports(query, key, value, attn_mask) and scale != 0.0:
        return fused_attention.attention(query, key, value, attn_mask, is_causal, scale, dropout_p)
    return _attention_math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


@register("scaled_dot_product_attention", "Ascend", tested=False,
          note="ops.flash_attention_score (BNSD) for fp16/bf16 4D inputs without dropout, else composite")
def _sdpa_ascend(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    # flash needs fp16/bf16 BNSD inputs and a caller-made dropout mask: other cases go the math way
    if query.ndim != 4 or query.dtype not in (mindspore.float16, mindspore.bfloat16) or dropout_p > 0.0:
        return _attention_math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    batch, heads, length, head_dim = query.shape
    source = key.shape[-2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    discard, shift, sparse_mode = None, None, 0
    if is_causal:  # flash's mask marks what to DROP; mode 2 is the top-left aligned causal band
        discard = ops.triu(ops.ones((2048, 2048), mindspore.uint8), 1)
        sparse_mode = 2
    elif attn_mask is not None and attn_mask.dtype == mindspore.bool_:
        per_head = attn_mask.ndim == 4 and attn_mask.shape[1] != 1
        shape = (batch, heads if per_head else 1, length, source)
        discard = ops.broadcast_to(ops.logical_not(attn_mask), shape).astype(mindspore.uint8)
    elif attn_mask is not None:  # additive mask: flash adds the "position shift" to the scaled scores
        shift = ops.broadcast_to(attn_mask, (batch, heads, length, source)).astype(query.dtype)
    return ops.flash_attention_score(query, key, value, heads, real_shift=shift, attn_mask=discard,
                                     scalar_value=scale, input_layout="BNSD", sparse_mode=sparse_mode)


_sdpa = kernel("scaled_dot_product_attention")


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: Optional[float] = None, enable_gqa: bool = False) -> Tensor:
    """Attention over ``(B, H, L, D)`` queries and ``(B, H_kv, S, D)`` keys/values.

    ``attn_mask``: boolean (True = attend) or additive float, broadcastable to ``(B, H, L, S)``.
    ``is_causal``: top-left aligned lower-triangular mask (no ``attn_mask`` allowed with it).
    ``enable_gqa``: ``H`` a multiple of ``H_kv``, each kv head serving ``H / H_kv`` query heads.
    Dropout, as in torch, applies whenever ``dropout_p > 0`` (pass ``0.0`` in eval).
    """
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal, not both")
    if query.shape[-3] != key.shape[-3] and not enable_gqa:
        raise ValueError(f"scaled_dot_product_attention: {query.shape[-3]} query heads and {key.shape[-3]} "
                         "key heads need enable_gqa=True")
    if enable_gqa and query.shape[-3] % key.shape[-3]:
        raise ValueError(f"scaled_dot_product_attention: {query.shape[-3]} query heads are not a multiple "
                         f"of {key.shape[-3]} key/value heads")
    if query.shape[-2] == 0 or key.shape[-2] == 0:
        # no queries or no keys: zeros, as torch (MindSpore's CPU matmuls leave an output whose
        # inner dim is empty unwritten, and the fused softmax refuses zero rows)
        return ops.zeros(tuple(query.shape[:-1]) + (value.shape[-1],), query.dtype)
    return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _rotary_composite(input, cos, sin, transpose_heads):
    if transpose_heads:
        input, cos, sin = ops.swapaxes(input, 1, 2), cos.expand_dims(-3), sin.expand_dims(-3)
    x = input.astype(mindspore.float32)
    x1, x2 = ops.chunk(x, 2, -1)
    return (x * cos + ops.cat((-x2, x1), -1) * sin).astype(input.dtype)


@register("rotary_embedding", "CPU",
          note="fused float32 kernel (adapters/kernels/rope.py), with the head transpose; else composite")
def _rotary_embedding_cpu(input, cos, sin, transpose_heads):
    if fused_rope.supports(input, cos, sin, transpose_heads):
        return fused_rope.rotary_embedding(input, cos, sin, transpose_heads)
    return _rotary_composite(input, cos, sin, transpose_heads)


@register("rotary_embedding", "Ascend", tested=False, note="composite")
def _rotary_embedding_ascend(input, cos, sin, transpose_heads):
    return _rotary_composite(input, cos, sin, transpose_heads)


_rotary_embedding = kernel("rotary_embedding")


def rotary_embedding(input: Tensor, cos: Tensor, sin: Tensor, transpose_heads: bool = False) -> Tensor:
    """Rotary position embedding (not in torch): ``input * cos + rotate_half(input) * sin`` with
    ``rotate_half(x) = cat(-x2, x1)`` over the halves of the last dim, in float32, cast back to
    ``input``'s dtype; cos/sin broadcast against ``input``.

    ``transpose_heads``: ``input`` is ``[B, L, H, D]``, cos/sin ``[B|1, L, D]``, and the result
    is ``[B, H, L, D]``: the rotation of ``input.transpose(1, 2)`` by ``cos.unsqueeze(1)``, in one
    kernel on CPU.
    """
    if transpose_heads and input.ndim != 4:
        raise ValueError(f"rotary_embedding: transpose_heads needs input [B, L, H, D], got {input.ndim} dims")
    return _rotary_embedding(input, cos, sin, transpose_heads)


@register("swiglu_linear", "CPU",
          note="fused kernel for <= 8 rows without biases (adapters/kernels/swiglu.py); else linear, linear, silu_mul")
def _swiglu_linear_cpu(x, gate_weight, gate_bias, up_weight, up_bias):
    if fused_swiglu.serves(x, gate_weight, gate_bias, up_weight, up_bias):
        return fused_swiglu.swiglu_linear(x, gate_weight, up_weight)
    return silu_mul(linear(x, gate_weight, gate_bias), linear(x, up_weight, up_bias))


@register("swiglu_linear", "Ascend", tested=False, note="linear, linear, silu_mul")
def _swiglu_linear_ascend(x, gate_weight, gate_bias, up_weight, up_bias):
    return silu_mul(linear(x, gate_weight, gate_bias), linear(x, up_weight, up_bias))


_swiglu_linear = kernel("swiglu_linear")


def swiglu_linear(x: Tensor, gate_weight: Tensor, gate_bias: Optional[Tensor], up_weight: Tensor,
                  up_bias: Optional[Tensor]) -> Tensor:
    """SwiGLU's gating (not in torch): ``silu(linear(x, gate_weight, gate_bias)) * linear(x,
    up_weight, up_bias)``; on CPU one kernel for inputs of at most 8 rows without biases
    (decoding), else the two linear layers and ``silu_mul``."""
    return _swiglu_linear(x, gate_weight, gate_bias, up_weight, up_bias)


def _write_slots_composite(cache, new, slots):
    marked = (slots != 0).reshape(slots.shape[0], 1, slots.shape[-1], 1)
    return ops.select(marked, new.broadcast_to(cache.shape), cache)


@register("write_slots", "CPU",
          note="fused kernel (adapters/kernels/cache.py): a copy of the cache and the new rows; else composite select")
def _write_slots_cpu(cache, new, slots):
    if fused_cache.serves(cache, new, slots):
        return fused_cache.write_slots(cache, new, slots)
    return _write_slots_composite(cache, new, slots)


@register("write_slots", "Ascend", tested=False, note="composite select")
def _write_slots_ascend(cache, new, slots):
    return _write_slots_composite(cache, new, slots)


_write_slots = kernel("write_slots")


def write_slots(cache: Tensor, new: Tensor, slots: Tensor) -> Tensor:
    """KV-cache write of one new row per sequence (not in torch): ``cache`` [B, G, S, D] with
    ``new`` [B, G, 1, D] written at every slot marked non-zero in ``slots`` [B|1, 1, S] (or
    [B|1, S]), i.e. ``torch.where((slots != 0).reshape(-1, 1, S, 1), new, cache)``; on CPU one
    kernel that copies the cache and the new rows instead of a broadcast select over the cache.
    """
    if cache.ndim != 4 or new.ndim != 4 or new.shape[2] != 1:
        raise ValueError(f"write_slots: cache [B, G, S, D] and new [B, G, 1, D], got {tuple(cache.shape)} and "
                         f"{tuple(new.shape)}")
    return _write_slots(cache, new, slots)


def _write_rows_composite(cache, new, slots):
    kept = cache * (1.0 - slots.sum(0)).reshape(1, 1, slots.shape[1], 1)
    return kept + mint.matmul(slots.transpose(1, 0).astype(new.dtype), new)


@register("write_rows", "CPU",
          note="fused kernel (adapters/kernels/cache.py): a copy of the cache and the new rows; else one-hot matmul")
def _write_rows_cpu(cache, new, slots):
    if fused_cache.serves_rows(cache, new, slots):
        return fused_cache.write_rows(cache, new, slots)
    return _write_rows_composite(cache, new, slots)


@register("write_rows", "Ascend", tested=False, note="one-hot matmul")
def _write_rows_ascend(cache, new, slots):
    return _write_rows_composite(cache, new, slots)


_write_rows = kernel("write_rows")


def write_rows(cache: Tensor, new: Tensor, slots: Tensor) -> Tensor:
    """KV-cache write of several new rows (not in torch; the prefill's): ``cache`` [B, G, S, D]
    with row i of ``new`` [B, G, L, D] at the slot marked in row i of ``slots`` [L, S] (one-hot
    rows at distinct slots), i.e. ``cache * (1 - slots.sum(0))[:, None] + slots.T @ new``; on CPU
    one kernel that copies the cache and the rows instead of the one-hot matmul.
    """
    if cache.ndim != 4 or new.ndim != 4 or slots.ndim != 2:
        raise ValueError(f"write_rows: cache [B, G, S, D], new [B, G, L, D] and slots [L, S], got "
                         f"{tuple(cache.shape)}, {tuple(new.shape)} and {tuple(slots.shape)}")
    return _write_rows(cache, new, slots)


def _project_qkv_composite(x, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, cos, sin, k_cache, v_cache,
                           slots):
    b, g, _, d = k_cache.shape
    cos, sin = cos.reshape(-1, 1, d), sin.reshape(-1, 1, d)
    heads = q_weight.shape[0] // d
    q = rotary_embedding(linear(x, q_weight, q_bias).reshape(b, 1, heads, d), cos, sin, True)
    k = rotary_embedding(linear(x, k_weight, k_bias).reshape(b, 1, g, d), cos, sin, True)
    v = linear(x, v_weight, v_bias).reshape(b, g, 1, d)
    return q.reshape(b, g, heads // g, d), write_slots(k_cache, k, slots), write_slots(v_cache, v, slots)


@register("project_qkv", "CPU",
          note="fused kernel (adapters/kernels/cache.py): the three projections, both rotations and both cache "
               "writes; else composite")
def _project_qkv_cpu(*args):
    if fused_cache.serves_project_qkv(*args):
        return fused_cache.project_qkv(*args)
    return _project_qkv_composite(*args)


@register("project_qkv", "Ascend", tested=False, note="composite")
def _project_qkv_ascend(*args):
    return _project_qkv_composite(*args)


_project_qkv = kernel("project_qkv")


def project_qkv(x: Tensor, q_weight: Tensor, q_bias: Optional[Tensor], k_weight: Tensor, k_bias: Optional[Tensor],
                v_weight: Tensor, v_bias: Optional[Tensor], cos: Tensor, sin: Tensor, k_cache: Tensor,
                v_cache: Tensor, slots: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """A decode step's attention inputs (not in torch): for x [B, 1, hidden] (one new token per
    sequence) and caches [B, G, S, D], the rotated queries ``rotary_embedding(linear(x, q_weight,
    q_bias).reshape(B, 1, H, D), cos, sin, True)`` as [B, G, H / G, D] (each key/value group's
    query heads as rows: ``scaled_dot_product_attention`` of it over the caches, with a mask the
    same for every head, is grouped-query attention), and the caches with
    ``k = rotary_embedding(linear(x, k_weight, k_bias).reshape(B, 1, G, D), cos, sin, True)`` and
    ``v = linear(x, v_weight, v_bias).reshape(B, G, 1, D)`` written at ``slots`` [B|1, 1, S] as
    :func:`write_slots` writes. cos / sin [B|1, 1, D]. On CPU one kernel instead of seven (three
    GEMVs, two rotations, two writes) and the reshapes between them.
    """
    if x.ndim != 3 or x.shape[1] != 1 or k_cache.ndim != 4:
        raise ValueError(f"project_qkv: x [B, 1, hidden] and caches [B, G, S, D], got {tuple(x.shape)} and "
                         f"{tuple(k_cache.shape)}")
    return _project_qkv(x, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, cos, sin, k_cache, v_cache, slots)


# ---- resampling and padding ----------------------------------------------------------
def _cubic_weights(t: float) -> Tuple[float, float, float, float]:
    """Keys' cubic convolution weights (a = -0.75, as torch) of taps -1, 0, 1, 2 at offset ``t``."""
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _resize_matrix(in_size: int, out_size: int, mode: str, align_corners: Optional[bool],
                   scale: Optional[float]) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of 1-D resampling, with torch's source-index rules.

    ``scale`` is the user's ``scale_factor`` along this dim (torch maps coordinates with it
    when it is given), else ``None``.
    """
    m = np.zeros((out_size, in_size), np.float64)
    if mode in ("nearest", "nearest-exact"):
        # float32 arithmetic, as torch's kernel, so the floors land on the same pixels
        step = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
        shift = np.float32(0.5 if mode == "nearest-exact" else 0.0)
        for i in range(out_size):
            m[i, min(int(np.floor((np.float32(i) + shift) * step)), in_size - 1)] = 1.0
        return m
    if mode == "area":
        for i in range(out_size):
            start = (i * in_size) // out_size
            end = -((-(i + 1) * in_size) // out_size)
            m[i, start:end] = 1.0 / (end - start)
        return m
    cubic = mode == "bicubic"
    if align_corners:
        step = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        step = 1.0 / scale if scale else in_size / out_size
    for i in range(out_size):
        src = step * i if align_corners else step * (i + 0.5) - 0.5
        if not cubic:
            src = max(src, 0.0)
            low = min(int(src), in_size - 1)
            frac = src - low
            high = min(low + 1, in_size - 1)
            m[i, low] += 1.0 - frac
            m[i, high] += frac
        else:
            low = math.floor(src)
            for tap, w in zip(range(low - 1, low + 3), _cubic_weights(src - low)):
                m[i, min(max(tap, 0), in_size - 1)] += w
    return m


@constexpr
def _resize_tensor(in_size: int, out_size: int, mode: str, align_corners: Optional[bool],
                   scale: Optional[float], dtype) -> Tensor:
    """:func:`_resize_matrix` as a constant tensor, built once at graph compile time."""
    return Tensor(_resize_matrix(in_size, out_size, mode, align_corners, scale), dtype)


_INTERPOLATE_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def interpolate(input: Tensor, size: Optional[_IntOrTuple] = None,
                scale_factor: Optional[Union[float, Sequence[float]]] = None, mode: str = "nearest",
                align_corners: Optional[bool] = None, recompute_scale_factor: Optional[bool] = None,
                antialias: bool = False) -> Tensor:
    """Resample ``(N, C, *spatial)``: nearest, nearest-exact, area, (bi/tri)linear, bicubic.

    Each spatial dim is resampled by a constant ``(out, in)`` matrix built with torch's
    coordinate rules (bicubic: a = -0.75, clamped border taps), so values and gradients
    follow torch's kernels on every device.
    """
    n_spatial = input.ndim - 2
    if mode in _INTERPOLATE_DIMS and _INTERPOLATE_DIMS[mode] != n_spatial:
        raise ValueError(f"interpolate: mode {mode!r} expects {_INTERPOLATE_DIMS[mode]} spatial dims, "
                         f"got input of shape {tuple(input.shape)}")
    if mode not in _INTERPOLATE_DIMS and mode not in ("nearest", "nearest-exact", "area"):
        raise ValueError(f"interpolate: unsupported mode {mode!r}")
    if align_corners is not None and mode not in _INTERPOLATE_DIMS:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported by adapters.torch")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: pass exactly one of size and scale_factor")
    in_sizes = tuple(input.shape[2:])
    if size is not None:
        out_sizes, scales = _ntuple(size, n_spatial), (None,) * n_spatial
    else:
        factors = _ntuple(scale_factor, n_spatial)
        out_sizes = tuple(int(math.floor(s * f)) for s, f in zip(in_sizes, factors))
        scales = (None,) * n_spatial if recompute_scale_factor else factors
    out = input
    for axis in range(n_spatial):
        if out_sizes[axis] == in_sizes[axis] and mode != "bicubic" and scales[axis] in (None, 1.0):
            continue  # identity resampling along this dim
        matrix = _resize_tensor(in_sizes[axis], out_sizes[axis], mode, align_corners, scales[axis], out.dtype)
        shape = tuple(out.shape)
        before = int(np.prod(shape[:2 + axis]))
        after = int(np.prod(shape[3 + axis:]))
        flat = out.reshape(before, in_sizes[axis], after)
        out = ops.matmul(matrix, flat).reshape(shape[:2 + axis] + (out_sizes[axis],) + shape[3 + axis:])
    return out


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: Optional[float] = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` dims (``pad`` lists the last dim first, as torch)."""
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(f"pad: unsupported mode {mode!r}")
    if mode == "constant":
        return ops.pad(input, tuple(pad), mode="constant", value=0.0 if value is None else value)
    return ops.pad(input, tuple(pad), mode=mode)


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """``(*, C * r^2, H, W)`` -> ``(*, C, H * r, W * r)``."""
    r = upscale_factor
    *lead, c, h, w = input.shape
    x = input.reshape(-1, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(tuple(lead) + (c // (r * r), h * r, w * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """``(*, C, H * r, W * r)`` -> ``(*, C * r^2, H, W)``."""
    r = downscale_factor
    *lead, c, h, w = input.shape
    x = input.reshape(-1, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(tuple(lead) + (c * r * r, h // r, w // r))


# ---- embedding, dropout, one-hot -----------------------------------------------------
def embedding(input: Tensor, weight: Tensor, padding_idx: Optional[int] = None, max_norm: Optional[float] = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` at ``input``; the ``padding_idx`` row gets no gradient."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    out = ops.gather(weight, input, 0)
    if padding_idx is None:
        return out
    padding_idx = padding_idx + weight.shape[0] if padding_idx < 0 else padding_idx
    return ops.where((input == padding_idx).expand_dims(-1), ops.stop_gradient(out), out)


@register("dropout", "CPU", note="ops.dropout (legacy kernel); mask from MindSpore's RNG")
def _dropout_cpu(input, p):
    return ops.dropout(input, p=p, training=True)


@register("dropout", "Ascend", tested=False, note="mint.nn.functional.dropout")
def _dropout_ascend(input, p):
    return mint.nn.functional.dropout(input, p, True)


_dropout = kernel("dropout")


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale survivors by ``1 / (1 - p)`` (training only).

    The mask comes from MindSpore's RNG (seeded by ``mindspore.set_seed``), so it never
    equals torch's mask for the same seed.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return _dropout(input, p)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot of class indices; ``num_classes=-1`` (max + 1) needs a concrete tensor (PyNative)."""
    if num_classes < 0:
        num_classes = int(tensor.max()) + 1
    classes = ops.arange(num_classes).astype(tensor.dtype)
    return (tensor.expand_dims(-1) == classes).astype(mindspore.int64)
