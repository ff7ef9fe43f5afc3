"""Rotary position embeddings: 1D (text), multimodal M-RoPE (Qwen2-VL text), 2D (Qwen ViT).

Each module turns integer position ids into (cos, sin) tables in fp32; ``apply_rotary``
rotates queries/keys with them. The inverse frequencies are computed once in numpy at
construction and held as a constant tensor (not a parameter, not in the state dict); HF's
``rope_scaling`` (``msmm.models.core.rope_scaling``) scales them.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .rope_scaling import RopeScaling, scaled_inverse_frequencies


def _exponents(dim: int) -> np.ndarray:
    """2i/dim for i < dim/2 (fp32 values, as HF), in float64."""
    return (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)).astype(np.float64)


def inverse_frequencies(dim: int, base: float, scaling: Optional[RopeScaling] = None) -> torch.Tensor:
    """theta_i = base^(-2i/dim) for i < dim/2, scaled by a static ``scaling``, as fp32."""
    inv_freq = scaled_inverse_frequencies(1.0 / (np.float64(base) ** _exponents(dim)), scaling, base)
    return torch.tensor(inv_freq.astype(np.float32))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# adapters (MindSpore) has a fused rotary kernel, F.rotary_embedding; torch has none
_fused_rotary = getattr(F, "rotary_embedding", None)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., D] by angles whose cos/sin [..., D] broadcast against it; fp32 math."""
    if _fused_rotary is not None:
        return _fused_rotary(x, cos, sin)
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def apply_rotary_heads_first(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, L, H, D] by cos/sin [B|1, L, D] and move the heads first: [B, H, L, D]
    (one kernel with adapters' fused rotary)."""
    if _fused_rotary is not None:
        return _fused_rotary(x, cos, sin, transpose_heads=True)
    return apply_rotary(x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1))


def _cos_sin(freqs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    emb = torch.cat((freqs, freqs), dim=-1)
    return torch.cos(emb), torch.sin(emb)


class RotaryEmbedding(nn.Module):
    """1D RoPE, or M-RoPE when ``mrope_section`` = (t, h, w) channel counts summing to dim / 2.

    forward(position_ids [B, L], or [3, B, L] for M-RoPE) -> cos, sin [B, L, dim].
    With M-RoPE, frequency channels of section k take their angle from position axis k.
    ``scaling``: HF's linear / yarn scale the frequencies once (yarn also cos and sin);
    dynamic NTK raises the base when the largest position id + 1 (L) exceeds the
    pre-training context L0: base * (factor * L / L0 - (factor - 1)) ** (dim / (dim - 2)).
    """

    def __init__(self, dim: int, base: float = 10000.0, mrope_section: Optional[Sequence[int]] = None,
                 scaling: Optional[RopeScaling] = None) -> None:
        super().__init__()
        self.dim = dim
        self.mrope_section = None if mrope_section is None else tuple(mrope_section)
        self.inv_freq = inverse_frequencies(dim, base, scaling)
        self.attention_factor = 1.0 if scaling is None else scaling.attention_factor
        self.dynamic = scaling if scaling is not None and scaling.kind == "dynamic" else None
        if self.dynamic is not None:
            self.neg_exponents = torch.tensor(-_exponents(dim).astype(np.float32))

    def _dynamic_inv_freq(self, position_ids: torch.Tensor) -> torch.Tensor:
        factor, context = self.dynamic.factor, float(self.dynamic.original_positions)
        length = torch.clamp(position_ids.max().float() + 1.0, min=context)
        ratio = (factor * length / context - (factor - 1.0)) ** (self.dim / (self.dim - 2))
        return self.inv_freq * torch.pow(ratio, self.neg_exponents)

    def forward(self, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq if self.dynamic is None else self._dynamic_inv_freq(position_ids)
        freqs = position_ids.float().unsqueeze(-1) * inv_freq  # [..., B, L, dim/2]
        if self.mrope_section is not None:
            if len(position_ids.shape) == 2:
                raise ValueError("M-RoPE needs position_ids of shape [3, batch, seq]")
            sections = torch.split(freqs, list(self.mrope_section), dim=-1)
            freqs = torch.cat([section[axis] for axis, section in enumerate(sections)], dim=-1)
        cos, sin = _cos_sin(freqs)
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        return cos, sin


class VisionRotaryEmbedding(nn.Module):
    """2D RoPE of the Qwen ViT: half the rotary channels follow the row, half the column.

    forward(position_ids [N, 2] of (row, col)) -> cos, sin [N, head_dim].
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.inv_freq = inverse_frequencies(head_dim // 2, base)

    def forward(self, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids.float().unsqueeze(-1) * self.inv_freq  # [N, 2, head_dim/4]
        return _cos_sin(freqs.flatten(1))
