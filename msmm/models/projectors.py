"""Vision-to-language projectors.

* ``PixelShuffleProjector`` (InternVL's ``mlp1``): pixel shuffle with ratio 0.5 folds every
  2x2 block of patch features into one token of 4x the channels, then LayerNorm -> Linear
  -> GELU -> Linear to the LLM width.
* ``MLPProjector`` (LLaVA-1.5's ``mlp2x_gelu``): Linear -> GELU -> Linear.

Parameter names follow HF's ``multi_modal_projector`` (layer_norm, linear_1, linear_2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import ColumnParallelLinear, RowParallelLinear

PS_VERSIONS = ("v1", "v2")


@dataclass
class PatchMergerConfig:
    """The Qwen 2x2 patch merger; its output width is the text decoder's hidden_size."""


@dataclass
class PixelShuffleMLPConfig:
    """InternVL's projector: pixel shuffle by ``downsample_ratio``, then LayerNorm-Linear-GELU-Linear."""

    downsample_ratio: float = 0.5
    ps_version: str = "v2"  # "v1" (InternVL 1.x remote code) or "v2"


@dataclass
class MLPProjectorConfig:
    """LLaVA-1.5's projector: Linear-GELU-Linear."""

    bias: bool = True


def pixel_shuffle(x: torch.Tensor, ratio: float = 0.5, ps_version: str = "v2") -> torch.Tensor:
    """InternVL's pixel shuffle: [N, h, w, C] -> [N, h * r, w * r, C / r^2].

    Folds neighbouring columns into channels, transposes, folds neighbouring rows, and
    (``ps_version`` "v2", every released InternVL) transposes back; "v1" omits that last
    transpose, as the earliest InternVL-Chat checkpoints did.
    """
    if ps_version not in PS_VERSIONS:
        raise ValueError(f"ps_version must be one of {PS_VERSIONS}, got {ps_version!r}")
    n, h, w, c = x.shape
    rh, rw, rc = int(h * ratio), int(w * ratio), int(c / (ratio * ratio))
    if rh / ratio != h or rw / ratio != w:
        raise ValueError(f"pixel shuffle with ratio {ratio} needs a grid divisible by {1 / ratio}, got {h}x{w}")
    x = x.reshape(n, h, rw, int(c / ratio)).permute(0, 2, 1, 3)
    x = x.reshape(n, rw, rh, rc)
    if ps_version == "v2":
        x = x.permute(0, 2, 1, 3)
    return x


class PixelShuffleProjector(nn.Module):
    """Patch features [N, P, C] (a square grid, class token removed) -> [N, P * r^2, text_hidden]."""

    def __init__(
        self,
        vision_hidden: int,
        text_hidden: int,
        downsample_ratio: float = 0.5,
        ps_version: str = "v2",
        layernorm_epsilon: float = 1e-5,
        init_method_std: float = 0.02,
    ) -> None:
        super().__init__()
        if ps_version not in PS_VERSIONS:
            raise ValueError(f"ps_version must be one of {PS_VERSIONS}, got {ps_version!r}")
        self.downsample_ratio = downsample_ratio
        self.ps_version = ps_version
        folded = vision_hidden * int(round(1 / downsample_ratio)) ** 2
        self.layer_norm = nn.LayerNorm(folded, eps=layernorm_epsilon)
        self.linear_1 = ColumnParallelLinear(folded, text_hidden, True, init_method_std)
        self.linear_2 = RowParallelLinear(text_hidden, text_hidden, True, init_method_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, p, c = features.shape
        side = int(round(p**0.5))
        if side * side != p:
            raise ValueError(f"PixelShuffleProjector needs a square patch grid, got {p} patches")
        x = pixel_shuffle(features.reshape(n, side, side, c), self.downsample_ratio, self.ps_version)
        x = x.reshape(n, x.shape[1] * x.shape[2], x.shape[3])
        return self.linear_2(F.gelu(self.linear_1(self.layer_norm(x))))


class MLPProjector(nn.Module):
    """[..., vision_hidden] -> [..., text_hidden] through Linear -> GELU -> Linear."""

    def __init__(self, vision_hidden: int, text_hidden: int, bias: bool = True, init_method_std: float = 0.02) -> None:
        super().__init__()
        self.linear_1 = ColumnParallelLinear(vision_hidden, text_hidden, bias, init_method_std)
        self.linear_2 = RowParallelLinear(text_hidden, text_hidden, bias, init_method_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(features)))
