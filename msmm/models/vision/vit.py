"""Pieces shared by the class-token ViTs (InternViT, CLIP): configuration, bidirectional
self-attention, and resizing of learned position embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from msmm.checkpoint.parallel import heads_per_rank

from ..core import ColumnParallelLinear, RowParallelLinear, TransformerConfig, dot_product_attention
from ..core.tensor_parallel import tensor_parallel_rank, tensor_parallel_size


@dataclass
class ViTConfig:
    """A pre-norm ViT with a class token and learned absolute position embeddings.

    ``feature_layer`` picks the hidden state handed to the projector, counted like HF's
    ``hidden_states`` tuple: 0 is the embeddings (after CLIP's pre-norm), k the output of
    layer k, -1 the last layer, -2 the penultimate. Layers after it are not built.
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layernorm_epsilon: float = 1e-6
    normalization: str = "LayerNorm"  # or "RMSNorm" (InternViT-6B)
    qkv_bias: bool = True
    qk_layernorm: bool = False  # RMSNorm of q and k over all heads (InternViT-6B)
    activation: str = "gelu"  # or "quick_gelu" (CLIP)
    final_layernorm: bool = False  # LayerNorm after the last layer, applied when feature_layer is -1
    feature_layer: int = -1
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    init_method_std: float = 0.02
    drop_path_rate: float = 0.0  # InternViT's stochastic depth (msmm.models.vision.drop_path)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) is not a multiple of patch_size ({self.patch_size})")
        if not -self.num_layers - 1 <= self.feature_layer <= self.num_layers:
            raise ValueError(f"feature_layer {self.feature_layer} is outside a {self.num_layers}-layer ViT")

    @property
    def grid_size(self) -> int:
        """Patches per side at ``image_size``."""
        return self.image_size // self.patch_size

    @property
    def layers_used(self) -> int:
        """How many layers run to produce the feature layer."""
        return self.feature_layer % (self.num_layers + 1)

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            num_layers=self.layers_used,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            ffn_hidden_size=self.ffn_hidden_size,
            layernorm_epsilon=self.layernorm_epsilon,
            add_qkv_bias=self.qkv_bias,
            add_bias_linear=True,
            init_method_std=self.init_method_std,
            attention_dropout=self.attention_dropout,
            hidden_dropout=self.hidden_dropout,
        )


class ViTSelfAttention(nn.Module):
    """Bidirectional multi-head attention over the tokens of one image.

    Names follow HF CLIP (q_proj, k_proj, v_proj, out_proj); subclasses with another
    layout override ``project_qkv``, ``_build_output`` and ``output``.

    With tensor parallelism a rank runs whole heads, split by MindSpeed-MM's unaligned rule
    (``--unaligned-linear``; ``msmm.checkpoint.parallel.heads_per_rank``: the first
    ``heads % TP`` ranks one head more, an even split when TP divides the heads), as mm-convert
    splits the checkpoint.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        h, std = config.hidden_size, config.init_method_std
        self.head_dim = config.kv_channels
        # the q/k/v rows (output columns) of each rank: its heads
        self.head_rows = [n * self.head_dim for n in heads_per_rank(config.num_attention_heads, tensor_parallel_size())]
        self.num_heads = self.head_rows[tensor_parallel_rank()] // self.head_dim  # this rank's heads
        self.dropout = config.attention_dropout
        self.q_proj = ColumnParallelLinear(h, h, config.add_qkv_bias, std, split_sizes=self.head_rows)
        self.k_proj = ColumnParallelLinear(h, h, config.add_qkv_bias, std, split_sizes=self.head_rows)
        self.v_proj = ColumnParallelLinear(h, h, config.add_qkv_bias, std, split_sizes=self.head_rows)
        self._build_output(config)

    def _build_output(self, config: TransformerConfig) -> None:
        self.out_proj = RowParallelLinear(config.hidden_size, config.hidden_size, True, config.init_method_std,
                                          split_sizes=self.head_rows)

    def project_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, hidden] -> [N, L, hidden]."""
        n, l = x.shape[0], x.shape[1]
        q, k, v = self.project_qkv(x)
        q = q.view(n, l, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(n, l, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(n, l, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        return self.output(dot_product_attention(q, k, v, None, dropout))


def resize_position_embedding(pos: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Learned position embeddings [1, 1 + S*S, C] (class token first, then an S x S grid)
    resized to a ``grid`` = (rows, cols) of patches: the grid part is resampled bicubically
    (align_corners=False), the class-token row is kept. Unchanged when the grid matches."""
    num_patches, channels = pos.shape[1] - 1, pos.shape[2]
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"position embeddings hold {num_patches} patches, not a square grid")
    if (side, side) == tuple(grid):
        return pos
    cls_pos, patch_pos = torch.split(pos, [1, num_patches], dim=1)
    patch_pos = patch_pos.reshape(1, side, side, channels).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(grid), mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], channels).to(pos.dtype)
    return torch.cat((cls_pos, patch_pos), dim=1)
