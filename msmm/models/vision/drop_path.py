"""Stochastic depth (per-sample drop path) of a residual branch, as timm's ``DropPath`` that
InternViT's remote code uses: in training, each sample's branch output is zeroed with
probability ``rate`` and the kept ones are scaled by ``1 / (1 - rate)``; identity in eval."""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn


def drop_path_rates(rate: float, num_layers: int) -> List[float]:
    """Per-layer rates rising linearly from 0 at the first layer to ``rate`` at the last
    (``torch.linspace(0, rate, num_layers)``, InternViT's schedule)."""
    if num_layers == 1:
        return [0.0]
    return [rate * i / (num_layers - 1) for i in range(num_layers)]


class DropPath(nn.Module):
    """``x * keep / (1 - rate)`` with ``keep`` [N, 1, ..., 1] one Bernoulli(1 - rate) draw per
    sample (training only)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
        self.rate = rate

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """1 for the samples whose branch is kept, 0 for the dropped, [N, 1, ..., 1] in x's dtype."""
        shape = (x.shape[0],) + (1,) * (len(x.shape) - 1)
        return (torch.rand(shape) < 1.0 - self.rate).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return x * self.keep_mask(x) / (1.0 - self.rate)
