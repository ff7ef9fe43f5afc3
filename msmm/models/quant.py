"""Weight-only quantization of frozen linear weights (the base of QLoRA-style fine-tuning).

Two storage formats, both dequantized on the fly to the compute dtype in ``forward``:

* ``int8``: per-output-channel absmax. ``scale[o] = max_i |W[o, i]| / 127``,
  ``q = round(W / scale)`` in int8; ``W ~ q * scale`` with error at most ``scale / 2``.
* ``nf4``: 4-bit NormalFloat (Dettmers et al., QLoRA, 2023). The flattened weight is cut
  into blocks of ``block_size`` values (zero-padded at the end); each block is divided by
  its absmax and every value replaced by the index of the nearest of 16 code values
  (``nf4_code_book``); two indices are packed into one uint8 (first in the high nibble).
  The error of a value is at most ``absmax * (half the widest gap between neighbouring
  codes)``.

Torch-style: runs on real torch and through auto_convert + adapters on MindSpore.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import List, Tuple

import torch

INT8_MAX = 127.0
_CHUNK = 1 << 20  # values compared with the code book at a time while quantizing


def nf4_code_book() -> List[float]:
    """The 16 NF4 values in [-1, 1]: quantiles of N(0, 1) (8 positive, 7 negative, and an
    exact zero), normalised by the largest, as constructed in the QLoRA paper."""
    offset = 1 - 0.5 * (1 / 32 + 1 / 30)  # 0.9677...: the outermost quantile probability
    ppf = NormalDist().inv_cdf
    positive = [ppf(offset + (0.5 - offset) * i / 8) for i in range(8)]  # linspace(offset, 0.5, 9)[:-1]
    negative = [-ppf(offset + (0.5 - offset) * i / 7) for i in range(7)]  # linspace(offset, 0.5, 8)[:-1]
    values = sorted(positive + negative + [0.0])
    top = max(abs(v) for v in values)
    return [v / top for v in values]


def nf4_error_bound() -> float:
    """Largest |x - nearest code| for x in [-1, 1] (half the widest gap between codes)."""
    codes = nf4_code_book()
    return max(b - a for a, b in zip(codes, codes[1:])) / 2


def quantize_int8(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in], float32 scale [out, 1])."""
    with torch.no_grad():
        w = weight.to(torch.float32)
        scale = torch.amax(w.abs(), dim=1, keepdim=True) / INT8_MAX
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.clamp(torch.round(w / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``q * scale`` in float32, rounded once to ``dtype``."""
    return (q.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def nf4_blocks(numel: int, block_size: int) -> int:
    return (numel + block_size - 1) // block_size


def quantize_nf4(weight: torch.Tensor, block_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (uint8 packed codes [ceil(numel / block) * block / 2], float32 absmax [blocks])."""
    if block_size % 2:
        raise ValueError(f"nf4 block_size must be even, got {block_size}")
    codes = nf4_code_book()
    with torch.no_grad():
        flat = weight.to(torch.float32).reshape(-1)
        blocks = nf4_blocks(flat.shape[0], block_size)
        pad = blocks * block_size - flat.shape[0]
        if pad:
            flat = torch.cat([flat, torch.zeros(pad)])
        grid = flat.reshape(blocks, block_size)
        absmax = torch.amax(grid.abs(), dim=1)
        absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
        normed = (grid / absmax[:, None]).reshape(-1)
        midpoints = torch.tensor([(a + b) / 2 for a, b in zip(codes, codes[1:])])
        indices = []
        for start in range(0, normed.shape[0], _CHUNK):  # index = number of midpoints below the value
            part = normed[start:start + _CHUNK]
            indices.append((part[:, None] > midpoints[None, :]).to(torch.int32).sum(dim=1))
        index = torch.cat(indices).reshape(-1, 2)
        packed = (index[:, 0] * 16 + index[:, 1]).to(torch.uint8)
    return packed, absmax


def nf4_byte_table() -> List[List[float]]:
    """[256][2]: the two code values a packed byte stands for (high nibble first)."""
    codes = nf4_code_book()
    return [[codes[b // 16], codes[b % 16]] for b in range(256)]


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, byte_table: torch.Tensor,
                   shape: Tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`quantize_nf4`: the [out, in] weight in ``dtype``. One gather of
    the two values of each byte (``nf4_byte_table``), then the block scales."""
    pairs = torch.index_select(byte_table.to(torch.float32), 0, packed.to(torch.int32))
    values = pairs.reshape(absmax.shape[0], -1) * absmax.to(torch.float32)[:, None]
    numel = shape[0] * shape[1]
    return values.reshape(-1)[:numel].reshape(shape[0], shape[1]).to(dtype)
