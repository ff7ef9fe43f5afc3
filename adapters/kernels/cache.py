"""KV-cache write of one new row per sequence at its slot (``csrc/cache.cpp``): decoding's
``where(slots != 0, new, cache)`` as a copy of the cache and a row copy per marked slot, with a
``bprop`` of plain selects.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
``F.write_slots`` then keeps the composite select.
"""
from __future__ import annotations

import mindspore
from mindspore import Tensor, ops

from .build import library
from .custom import custom_op

_LIBRARY = library("cache")
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
    if tuple(new.shape) != (b, g, 1, d):
        return False
    shape = tuple(slots.shape)
    if len(shape) == 3 and shape[1] == 1:
        shape = (shape[0], shape[2])
    return len(shape) == 2 and shape[1] == s and shape[0] in (1, b)


def write_slots(cache: Tensor, new: Tensor, slots: Tensor) -> Tensor:
    """``cache`` with ``new``'s row written at every slot marked in ``slots`` (inputs
    :func:`serves` accepts)."""
    return _write_slots(cache, new, slots.reshape(slots.shape[0], slots.shape[-1]))
