"""Decoding's KV-cache kernels (``csrc/cache.cpp``), each with a ``bprop`` of composite ops:

- ``write_slots``: one new row per sequence written at its slot, ``where(slots != 0, new,
  cache)``, as a copy of the cache and a row copy per marked slot;
- ``write_rows``: several new rows (the prefill), row i at the slot marked in ``slots[i]``
  (one-hot), as a copy and row copies instead of a one-hot matmul over the cache;
- ``project_qkv``: a decode step's projections of an attention layer in one kernel: the three
  projections of the new token, the rotation of queries and keys, both cache writes.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.write_slots``, ``F.write_rows`` and ``F.project_qkv`` then keep their composite kernels.
"""
from __future__ import annotations

import mindspore
from typing import Optional, Tuple

from mindspore import Tensor, mint, ops

from .build import library
from .custom import custom_op

_LIBRARY = library("cache", ("-fopenmp-simd",))
AVAILABLE = _LIBRARY is not None
# the element types csrc/cache.cpp copies (as bytes)
_DTYPES = (mindspore.float32, mindspore.float16, mindspore.bfloat16, mindspore.float64, mindspore.int32,
           mindspore.int64)


def _cache_shape(cache, new, slots):
    return cache


def _cache_dtype(cache, new, slots):
    return cache


def _marked(slots: Tensor, cache: Tensor) -> Tensor:
    """slots [Bs, S] -> bool [Bs, 1, S, 1], True at the written slots."""
    return (slots != 0).reshape(slots.shape[0], 1, slots.shape[1], 1)


def _write_slots_bprop(cache, new, slots, out, dout):
    marked = _marked(slots, cache)
    zero = ops.zeros((), dout.dtype)
    dcache = ops.select(marked, zero, dout)
    dnew = ops.select(marked, dout, zero).sum(2, keepdims=True)
    return dcache, dnew, ops.zeros_like(slots)


if AVAILABLE:
    _write_slots = custom_op(_LIBRARY, "WriteSlots", _cache_shape, _cache_dtype, _write_slots_bprop)


def serves(cache: Tensor, new: Tensor, slots: Tensor) -> bool:
    """Whether the kernel serves ``write_slots(cache, new, slots)``: cache [B, G, S, D], new
    [B, G, 1, D] of the same dtype, slots float32 [Bs, S] or [Bs, 1, S] with Bs 1 or B."""
    if not AVAILABLE or len(cache.shape) != 4 or len(new.shape) != 4 or cache.dtype not in _DTYPES:
        return False
    if new.dtype != cache.dtype or slots.dtype != mindspore.float32:
        return False
    b, g, s, d = cache.shape
    return tuple(new.shape) == (b, g, 1, d) and _slots_fit(slots, b, s)


def _slots_fit(slots: Tensor, batch: int, length: int) -> bool:
    """slots [Bs, 1, S] or [Bs, S] with Bs 1 or ``batch`` and S ``length``."""
    shape = tuple(slots.shape)
    if len(shape) == 3 and shape[1] == 1:
        shape = (shape[0], shape[2])
    return len(shape) == 2 and shape[1] == length and shape[0] in (1, batch)


def write_slots(cache: Tensor, new: Tensor, slots: Tensor) -> Tensor:
    """``cache`` with ``new``'s row written at every slot marked in ``slots`` (inputs
    :func:`serves` accepts)."""
    return _write_slots(cache, new, slots.reshape(slots.shape[0], slots.shape[-1]))


# ---- write_rows: the prefill's write, new row i at the slot marked in slots[i]


def _write_rows_bprop(cache, new, slots, out, dout):
    kept = (1.0 - slots.sum(0)).reshape(1, 1, slots.shape[1], 1)
    return dout * kept, mint.matmul(slots, dout), ops.zeros_like(slots)


if AVAILABLE:
    _write_rows = custom_op(_LIBRARY, "WriteRows", _cache_shape, _cache_dtype, _write_rows_bprop)


def serves_rows(cache: Tensor, new: Tensor, slots: Tensor) -> bool:
    """Whether the kernel serves ``write_rows(cache, new, slots)``: cache [B, G, S, D], new
    [B, G, L, D] of the same dtype, slots float32 [L, S]."""
    if not AVAILABLE or len(cache.shape) != 4 or len(new.shape) != 4 or cache.dtype not in _DTYPES:
        return False
    if new.dtype != cache.dtype or slots.dtype != mindspore.float32 or len(slots.shape) != 2:
        return False
    b, g, s, d = cache.shape
    return tuple(new.shape) == (b, g, slots.shape[0], d) and slots.shape[1] == s


def write_rows(cache: Tensor, new: Tensor, slots: Tensor) -> Tensor:
    """``cache`` with row i of ``new`` at the slot marked in row i of ``slots`` (inputs
    :func:`serves_rows` accepts)."""
    return _write_rows(cache, new, slots)


# ---- project_qkv: q = rope(x Wq^T + bq), k = rope(x Wk^T + bk), v = x Wv^T + bv; k, v written at the slots


def _qkv_shape(*shapes):
    k_cache, wq = shapes[-3], shapes[1]
    groups, dim = k_cache[1], k_cache[3]
    return [k_cache[0], groups, wq[0] // dim // groups, dim], shapes[-3], shapes[-2]


def _qkv_dtype(*dtypes):
    return dtypes[0], dtypes[-3], dtypes[-2]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


def _rope_grads(dy, raw, c, s):
    """rope's backward for rows dy / raw [B, heads, D] and tables c / s [Bc, 1, D]: (d raw,
    dcos, dsin), the table gradients summed over heads (and over the batch when Bc is 1)."""
    dcos, dsin = (dy * raw).sum(1, keepdims=True), (dy * _rotate_half(raw)).sum(1, keepdims=True)
    if c.shape[0] == 1:
        dcos, dsin = dcos.sum(0, keepdims=True), dsin.sum(0, keepdims=True)
    return dy * c - _rotate_half(dy * s), dcos, dsin


def _project_qkv_grads(x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, slots, dout):
    """Gradients of project_qkv's inputs (the biases' None without bias), from (dq, dk_cache, dv_cache)."""
    dq, dkc, dvc = dout
    b, g, _, d = k_cache.shape
    marked = _marked(slots, k_cache)
    zero = ops.zeros((), dkc.dtype)
    dk = ops.select(marked, dkc, zero).sum(2).reshape(b, g, d)  # the rotated new key's gradient
    dv = ops.select(marked, dvc, zero).sum(2).reshape(b, g * d)
    rows = x.reshape(b, x.shape[-1])

    def projected(w, bias):
        out = mint.matmul(rows, w.T)
        return out if bias is None else out + bias

    heads = wq.shape[0] // d
    dq_raw, dcos_q, dsin_q = _rope_grads(dq.reshape(b, heads, d), projected(wq, bq).reshape(b, heads, d), cos, sin)
    dk_raw, dcos_k, dsin_k = _rope_grads(dk, projected(wk, bk).reshape(b, g, d), cos, sin)
    dq_raw, dk_raw = dq_raw.reshape(b, heads * d), dk_raw.reshape(b, g * d)
    dx = (mint.matmul(dq_raw, wq) + mint.matmul(dk_raw, wk) + mint.matmul(dv, wv)).reshape(x.shape)
    weights = (mint.matmul(dq_raw.T, rows), mint.matmul(dk_raw.T, rows), mint.matmul(dv.T, rows))
    biases = (dq_raw.sum(0), dk_raw.sum(0), dv.sum(0))
    tables = ((dcos_q + dcos_k).reshape(cos.shape), (dsin_q + dsin_k).reshape(sin.shape))
    caches = (ops.select(marked, zero, dkc), ops.select(marked, zero, dvc))
    return dx, weights, biases, tables, caches, ops.zeros_like(slots)


def _project_qkv_bprop(x, wq, wk, wv, cos, sin, k_cache, v_cache, slots, out, dout):
    dx, (dwq, dwk, dwv), _, (dcos, dsin), (dkc, dvc), dslots = _project_qkv_grads(
        x, wq, None, wk, None, wv, None, cos, sin, k_cache, slots, dout)
    return dx, dwq, dwk, dwv, dcos, dsin, dkc, dvc, dslots


def _project_qkv_bias_bprop(x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, v_cache, slots, out, dout):
    dx, (dwq, dwk, dwv), (dbq, dbk, dbv), (dcos, dsin), (dkc, dvc), dslots = _project_qkv_grads(
        x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, slots, dout)
    return dx, dwq, dbq, dwk, dbk, dwv, dbv, dcos, dsin, dkc, dvc, dslots


if AVAILABLE:
    _project_qkv = custom_op(_LIBRARY, "ProjectQKV", _qkv_shape, _qkv_dtype, _project_qkv_bprop)
    _project_qkv_bias = custom_op(_LIBRARY, "ProjectQKVBias", _qkv_shape, _qkv_dtype, _project_qkv_bias_bprop)


def _table(t: Tensor) -> Optional[Tuple[int, ...]]:
    """A cos / sin table as the kernel's [Bc, 1, D] shape, or None."""
    shape = tuple(t.shape)
    if len(shape) == 2:
        shape = (1,) + shape
    return shape if len(shape) == 3 and shape[1] == 1 else None


def serves_project_qkv(x: Tensor, wq: Tensor, bq: Optional[Tensor], wk: Tensor, bk: Optional[Tensor], wv: Tensor,
                       bv: Optional[Tensor], cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor,
                       slots: Tensor) -> bool:
    """Whether the kernel serves ``project_qkv``: float32 throughout, x [B, 1, K], wq [H * D, K]
    with H a multiple of G, wk / wv [G * D, K], all three biases [rows] or none, cos / sin
    [B|1, 1, D] (or [1, D]), caches [B, G, S, D], slots [B|1, 1, S] or [B|1, S]."""
    if not AVAILABLE or (bq is None) != (bk is None) or (bk is None) != (bv is None):
        return False
    f32 = mindspore.float32
    if x.dtype != f32 or wq.dtype != f32 or wk.dtype != f32 or wv.dtype != f32:
        return False
    if cos.dtype != f32 or sin.dtype != f32 or k_cache.dtype != f32 or v_cache.dtype != f32 or slots.dtype != f32:
        return False
    if bq is not None and (bq.dtype != f32 or bk.dtype != f32 or bv.dtype != f32):
        return False
    if len(x.shape) != 3 or len(k_cache.shape) != 4 or tuple(v_cache.shape) != tuple(k_cache.shape):
        return False
    b, g, s, d = k_cache.shape
    width, hidden = g * d, x.shape[2]
    if x.shape[0] != b or x.shape[1] != 1 or d % 2 or d == 0 or len(wq.shape) != 2 or wq.shape[0] % width:
        return False
    if wq.shape[1] != hidden or tuple(wk.shape) != (width, hidden) or tuple(wv.shape) != (width, hidden):
        return False
    if bq is not None and (tuple(bq.shape) != (wq.shape[0],) or tuple(bk.shape) != (width,)
                           or tuple(bv.shape) != (width,)):
        return False
    table = _table(cos)
    if table is None or table[0] not in (1, b) or table[2] != d or tuple(sin.shape) != tuple(cos.shape):
        return False
    return _slots_fit(slots, b, s)


def project_qkv(x: Tensor, wq: Tensor, bq: Optional[Tensor], wk: Tensor, bk: Optional[Tensor], wv: Tensor,
                bv: Optional[Tensor], cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor,
                slots: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(q [B, G, H / G, D], k_cache, v_cache) for inputs :func:`serves_project_qkv` accepts."""
    table = _table(cos)
    cos, sin = cos.reshape(table), sin.reshape(table)
    slots = slots.reshape(slots.shape[0], slots.shape[-1])
    if bq is None:
        return _project_qkv(x, wq, wk, wv, cos, sin, k_cache, v_cache, slots)
    return _project_qkv_bias(x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, v_cache, slots)
