"""Normalization layers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, then scaled by ``weight`` in the input dtype.

    A float32 input and weight go through one ``F.rms_norm`` call with the weight (a single
    fused kernel where the device has one); other dtypes keep HF's numerics.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (self.hidden_size,), self.weight, self.eps)
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
