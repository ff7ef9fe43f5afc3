"""Normalization layers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, then scaled by ``weight`` in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (self.hidden_size,), eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


def build_norm(kind: str, hidden_size: int, eps: float) -> nn.Module:
    """``kind`` is "RMSNorm" or "LayerNorm" (Megatron's ``normalization`` values)."""
    if kind == "RMSNorm":
        return RMSNorm(hidden_size, eps)
    if kind == "LayerNorm":
        return nn.LayerNorm(hidden_size, eps=eps)
    raise ValueError(f"normalization must be 'RMSNorm' or 'LayerNorm', got {kind!r}")
