"""Fused float32 masked softmax for attention (``csrc/attention.cpp``), forward and backward,
and scaled-dot-product attention built on it: two BatchMatMuls around one softmax kernel.

The softmax reads the scores, the scale and the mask (bool keep-mask or additive float,
broadcast over batch / heads / queries without being materialised, or a causal band) in
one pass and writes the probabilities; a fully masked row gives zeros, as torch's sdpa.
Its backward is one pass too. With grouped-query attention whose mask is the same for
every head, the query heads of a key/value group are stacked along the query rows
(``[B, H, L, D]`` -> ``[B, Hkv, n_rep * L, D]``, a reshape), so keys and values are never
repeated.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.scaled_dot_product_attention`` then keeps its composite kernel.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import mindspore
from mindspore import Tensor, ops
from mindspore.ops import constexpr

from .build import library
from .custom import THREADED, custom_op, first_dtype, first_shape

_LIBRARY = library("attention", THREADED)
AVAILABLE = _LIBRARY is not None

_scores = ops.BatchMatMul(transpose_b=True)  # q k^T without a transposed copy of k
_weighted = ops.BatchMatMul()
_weighted_t = ops.BatchMatMul(transpose_a=True)  # p^T dy without a transposed copy of p

# Queries per call up to which one fused pass per row (Attend) beats two BatchMatMuls around
# the softmax kernel: decoding (L = 1) and short chunks; longer ones are matmul-bound.
ATTEND_MAX_QUERIES = 16


@constexpr
def _params(scale: float, queries: int, causal: bool, offset: int) -> Tensor:
    """[scale, L, causal, offset] as the kernel's float32 parameter tensor (a graph constant)."""
    return Tensor([scale, float(queries), 1.0 if causal else 0.0, float(offset)], mindspore.float32)


def _mask_grad(dx: Tensor, mask: Tensor, params: Tensor) -> Tensor:
    """Gradient of an additive mask: the scores' gradient unscaled, summed over what it broadcast to."""
    batch, groups, rows, keys = dx.shape
    if mask.shape[2] == 1:
        dx = ops.sum(dx, 2, keepdim=True)
    elif mask.shape[2] != rows:  # grouped-query rows: n_rep blocks of the mask's L rows
        dx = ops.sum(dx.reshape(batch, groups, rows // mask.shape[2], mask.shape[2], keys), 2)
    if mask.shape[1] == 1 and groups != 1:
        dx = ops.sum(dx, 1, keepdim=True)
    if mask.shape[0] == 1 and batch != 1:
        dx = ops.sum(dx, 0, keepdim=True)
    return dx / params[0]


if AVAILABLE:
    _softmax_grad = custom_op(_LIBRARY, "MaskedSoftmaxGrad", first_shape, first_dtype)


def _softmax_bprop(x, params, out, dout):
    return _softmax_grad(out, dout, params), ops.zeros_like(params)


def _softmax_keep_bprop(x, mask, params, out, dout):
    return _softmax_grad(out, dout, params), ops.zeros_like(mask), ops.zeros_like(params)


def _softmax_add_bprop(x, mask, params, out, dout):
    dx = _softmax_grad(out, dout, params)
    return dx, _mask_grad(dx, mask, params), ops.zeros_like(params)


if AVAILABLE:
    _softmax = custom_op(_LIBRARY, "MaskedSoftmax", first_shape, first_dtype, _softmax_bprop)
    _softmax_keep = custom_op(_LIBRARY, "MaskedSoftmaxKeep", first_shape, first_dtype, _softmax_keep_bprop)
    _softmax_add = custom_op(_LIBRARY, "MaskedSoftmaxAdd", first_shape, first_dtype, _softmax_add_bprop)


def masked_softmax(scores: Tensor, mask: Optional[Tensor], scale: float, queries: int,
                   causal: bool = False, offset: int = 0) -> Tensor:
    """``softmax(scores * scale + mask)`` over the last dim of float32 ``scores [B, G, R, S]``.

    ``mask``: None, bool (True = keep) or float32 (added), shaped ``[Bm, Gm, Lm, S]`` with
    each of Bm, Gm, Lm 1 or the scores' dim, or Lm = ``queries`` (L) when the R rows are
    R / L groups of the same L queries (row r is query r % L). ``causal``: query i keeps
    keys j <= i + ``offset``. A fully masked row gives zeros.
    """
    params = _params(scale, queries, causal, offset)
    if mask is None:
        return _softmax(scores, params)
    if mask.dtype == mindspore.bool_:
        return _softmax_keep(scores, mask, params)
    return _softmax_add(scores, mask, params)


def _attend_grads(q, k, v, probs, dout, params):
    """Gradients of ``probs v`` with ``probs = softmax(q k^T * scale + mask)`` for q, k, v."""
    dv = _weighted_t(probs, dout)
    dscores = _softmax_grad(probs, _scores(dout, v), params)
    return _weighted(dscores, k), _weighted_t(dscores, q), dv


def _attend_bprop(q, k, v, params, out, dout):
    probs = _softmax(_scores(q, k), params)
    return (*_attend_grads(q, k, v, probs, dout, params), ops.zeros_like(params))


def _attend_keep_bprop(q, k, v, mask, params, out, dout):
    probs = _softmax_keep(_scores(q, k), mask, params)
    return (*_attend_grads(q, k, v, probs, dout, params), ops.zeros_like(mask), ops.zeros_like(params))


def _attend_shape(q, k, v, *rest):
    return list(q[:3]) + [v[3]]


if AVAILABLE:
    _attend = custom_op(_LIBRARY, "Attend", _attend_shape, first_dtype, _attend_bprop)
    _attend_keep = custom_op(_LIBRARY, "AttendKeep", _attend_shape, first_dtype, _attend_keep_bprop)


def _mask_4d(mask: Tensor) -> Tensor:
    return mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))


@constexpr
def _fits(query_shape, key_shape, value_shape, dtypes, mask_shape, mask_dtype) -> bool:
    if len(query_shape) != 4 or len(key_shape) != 4 or len(value_shape) != 4:
        return False
    if any(dtype != mindspore.float32 for dtype in dtypes):
        return False
    if key_shape[0] != query_shape[0] or value_shape[0] != query_shape[0]:
        return False
    if mask_shape is None:
        return True
    if mask_dtype not in (mindspore.bool_, mindspore.float32) or len(mask_shape) > 4:
        return False
    target = (query_shape[0], query_shape[1], query_shape[2], key_shape[2])
    shape = (1,) * (4 - len(mask_shape)) + tuple(mask_shape)
    return shape[3] == target[3] and all(m in (1, t) for m, t in zip(shape[:3], target[:3]))


def supports(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor]) -> bool:
    """Whether :func:`attention` serves these inputs (else the caller's composite does):
    float32 4D query/key/value with equal batch, a bool or float32 mask of at most 4 dims
    broadcasting to ``[B, H, L, S]`` along its leading dims only (its last dim is S)."""
    if not AVAILABLE:
        return False
    dtypes = (query.dtype, key.dtype, value.dtype)
    if attn_mask is None:
        return _fits(query.shape, key.shape, value.shape, dtypes, None, None)
    return _fits(query.shape, key.shape, value.shape, dtypes, attn_mask.shape, attn_mask.dtype)


def _groups(query: Tensor, key: Tensor, value: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Query, key and value with every key/value head serving its query heads: the query heads
    of a group stacked along the rows when the mask is the same for all heads, else keys and
    values repeated per query head."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if heads == kv_heads:
        return query, key, value
    n_rep = heads // kv_heads
    if mask is None or mask.shape[1] == 1:
        return query.reshape(batch, kv_heads, n_rep * length, dim), key, value

    def repeat(x: Tensor) -> Tensor:
        shape = (batch, kv_heads, n_rep) + tuple(x.shape[2:])
        return ops.broadcast_to(x.expand_dims(2), shape).reshape(batch, heads, x.shape[2], x.shape[3])

    return query, repeat(key), repeat(value)


def attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
              scale: Optional[float], dropout_p: float = 0.0) -> Tensor:
    """``dropout(softmax(q k^T * scale + mask)) v`` for inputs :func:`supports` accepts: query
    ``[B, H, L, D]``, key/value ``[B, Hkv, S, D]`` (H a multiple of Hkv). ``is_causal``: top-left
    aligned (query i attends to keys j <= i), as torch. Dropout (``dropout_p > 0``) is
    MindSpore's kernel on the probabilities, as ``F.dropout`` on CPU."""
    batch, heads, length, dim = query.shape
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    mask = None if attn_mask is None else _mask_4d(attn_mask)
    q, k, v = _groups(query, key, value, mask)
    if length <= ATTEND_MAX_QUERIES and dropout_p == 0.0 and (mask is None or mask.dtype == mindspore.bool_):
        params = _params(scale, length, is_causal, 0)
        out = _attend(q, k, v, params) if mask is None else _attend_keep(q, k, v, mask, params)
        return out.reshape(batch, heads, length, value.shape[3])
    probs = masked_softmax(_scores(q, k), mask, scale, length, is_causal)
    if dropout_p > 0.0:
        probs = ops.dropout(probs, p=dropout_p, training=True)
    return _weighted(probs, v).reshape(batch, heads, length, value.shape[3])
