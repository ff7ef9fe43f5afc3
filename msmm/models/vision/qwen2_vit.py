"""The Qwen2-VL and Qwen2.5-VL vision transformers.

Pixels arrive as pre-cut patches [N, C * T * P * P] (T = temporal patch 2, P = patch
size), in 2x2-merge-block order. Blocks use 2D rotary positions and attend within a frame
(block-diagonal mask from segment ids); Qwen2.5-VL attends within windows except in its
full-attention blocks, and reorders the sequence window by window around the blocks. The
2x2 patch merger turns every 4 neighbouring patches into one LLM token.

Parameter names equal HF's ``visual.*`` keys. The metadata inputs (positions, segments,
window permutation) come from ``qwen2_vl_meta.vision_metadata``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import (
    MLP,
    ColumnParallelLinear,
    RowParallelLinear,
    SwiGLUMLP,
    TransformerConfig,
    VisionRotaryEmbedding,
    apply_rotary,
    build_norm,
    dot_product_attention,
    segment_mask,
)
from ..core.tensor_parallel import divide

NORM_EPS = 1e-6


@dataclass
class QwenViTConfig:
    """Qwen2-VL ViT (LayerNorm, quick-GELU MLP) or, with ``window_size`` set, Qwen2.5-VL's
    (RMSNorm, SwiGLU MLP, window attention except in ``fullatt_block_indexes``)."""

    num_layers: int  # HF depth
    hidden_size: int  # HF embed_dim (Qwen2-VL) / hidden_size (Qwen2.5-VL)
    num_attention_heads: int  # HF num_heads
    ffn_hidden_size: int
    out_hidden_size: int  # the LLM hidden size
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: Optional[int] = None
    fullatt_block_indexes: Sequence[int] = ()
    tokens_per_second: Optional[float] = None

    @property
    def is_qwen2_5(self) -> bool:
        return self.window_size is not None

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            ffn_hidden_size=self.ffn_hidden_size,
            layernorm_epsilon=NORM_EPS,
            add_qkv_bias=True,
            add_bias_linear=True,
        )


def qwen_vit_config_from_hf(vision: Mapping[str, Any], qwen2_5: bool) -> QwenViTConfig:
    """From the ``vision_config`` dict of a Qwen2-VL (``qwen2_5`` False) or Qwen2.5-VL config."""
    if qwen2_5:
        return QwenViTConfig(
            num_layers=vision["depth"],
            hidden_size=vision["hidden_size"],
            num_attention_heads=vision["num_heads"],
            ffn_hidden_size=vision["intermediate_size"],
            out_hidden_size=vision["out_hidden_size"],
            in_channels=vision.get("in_channels", 3),
            patch_size=vision.get("patch_size", 14),
            temporal_patch_size=vision.get("temporal_patch_size", 2),
            spatial_merge_size=vision.get("spatial_merge_size", 2),
            window_size=vision.get("window_size", 112),
            fullatt_block_indexes=tuple(vision.get("fullatt_block_indexes", (7, 15, 23, 31))),
            tokens_per_second=vision.get("tokens_per_second", 4),
        )
    if vision.get("hidden_act", "quick_gelu") != "quick_gelu":
        raise ValueError(f"Qwen2-VL vision_config.hidden_act must be 'quick_gelu', got {vision['hidden_act']!r}")
    return QwenViTConfig(
        num_layers=vision["depth"],
        hidden_size=vision["embed_dim"],
        num_attention_heads=vision["num_heads"],
        ffn_hidden_size=int(vision["embed_dim"] * vision.get("mlp_ratio", 4)),
        out_hidden_size=vision["hidden_size"],
        in_channels=vision.get("in_channels", 3),
        patch_size=vision.get("patch_size", 14),
        temporal_patch_size=vision.get("temporal_patch_size", 2),
        spatial_merge_size=vision.get("spatial_merge_size", 2),
    )


class PatchEmbed3D(nn.Module):
    """Conv3d with stride = kernel = (T, P, P) over pre-cut patches, i.e. one matmul per patch."""

    def __init__(self, config: QwenViTConfig) -> None:
        super().__init__()
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.embed_dim = config.hidden_size
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel, stride=kernel, bias=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches [N, C * T * P * P] -> [N, embed_dim]"""
        weight = self.proj.weight.reshape(self.embed_dim, -1)
        return F.linear(patches.to(weight.dtype), weight)


class VisionAttention(nn.Module):
    """Bidirectional attention with fused ``qkv`` ([3, heads, head_dim] output layout) and ``proj``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        h, std = config.hidden_size, config.init_method_std
        self.num_heads = divide(config.num_attention_heads, "the ViT's num_attention_heads")  # this rank's heads
        self.head_dim = config.kv_channels
        self.qkv = ColumnParallelLinear(h, 3 * h, True, std, fused_parts=3)  # a rank holds [q_r; k_r; v_r]
        self.proj = RowParallelLinear(h, h, True, std)

    def forward(self, x: torch.Tensor, rotary, mask: torch.Tensor) -> torch.Tensor:
        """x [N, dim]; rotary (cos, sin) [N, head_dim]; mask bool [1, 1, N, N]."""
        n = x.shape[0]
        qkv = self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        q, k, v = torch.chunk(qkv, 3, dim=0)  # each [1, heads, N, head_dim]
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return self.proj(dot_product_attention(q, k, v, mask).reshape(n, -1))


class VisionBlock(nn.Module):
    def __init__(self, config: QwenViTConfig) -> None:
        super().__init__()
        tc = config.transformer_config()
        norm = "RMSNorm" if config.is_qwen2_5 else "LayerNorm"
        self.norm1 = build_norm(norm, config.hidden_size, NORM_EPS)
        self.norm2 = build_norm(norm, config.hidden_size, NORM_EPS)
        self.attn = VisionAttention(tc)
        self.mlp = SwiGLUMLP(tc) if config.is_qwen2_5 else MLP(tc, activation="quick_gelu")

    def forward(self, x: torch.Tensor, rotary, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rotary, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """Norm, then each 2x2 block of patch features concatenated -> Linear, GELU, Linear."""

    def __init__(self, config: QwenViTConfig) -> None:
        super().__init__()
        self.merged_dim = config.hidden_size * config.spatial_merge_size**2
        self.ln_q = build_norm("RMSNorm" if config.is_qwen2_5 else "LayerNorm", config.hidden_size, NORM_EPS)
        self.mlp = nn.Sequential(
            ColumnParallelLinear(self.merged_dim, self.merged_dim, bias=True),
            nn.GELU(),
            RowParallelLinear(self.merged_dim, config.out_hidden_size, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, embed_dim] -> [N / 4, out_hidden_size]"""
        return self.mlp(self.ln_q(x).reshape(-1, self.merged_dim))


class QwenVisionTransformer(nn.Module):
    """Qwen2-VL / Qwen2.5-VL ViT: patch embed -> blocks -> merger. State dict = HF ``visual.*``."""

    def __init__(self, config: QwenViTConfig) -> None:
        super().__init__()
        self.config = config
        self.merge_unit = config.spatial_merge_size**2
        self.patch_embed = PatchEmbed3D(config)
        self.rotary_pos_emb = VisionRotaryEmbedding(config.hidden_size // config.num_attention_heads)
        self.blocks = nn.ModuleList([VisionBlock(config) for _ in range(config.num_layers)])
        self.full_attention_blocks = frozenset(config.fullatt_block_indexes)
        self.merger = PatchMerger(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        position_ids: torch.Tensor,
        segment_ids: torch.Tensor,
        window_segment_ids: Optional[torch.Tensor] = None,
        window_index: Optional[torch.Tensor] = None,
        reverse_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """pixel_values [N, C*T*P*P] -> LLM-token features [N / 4, out_hidden_size].

        position_ids [N, 2], segment_ids [N] (frames); Qwen2.5-VL also window_segment_ids
        [N], window_index / reverse_index [N / 4]; all from ``vision_metadata``.
        """
        x = self.patch_embed(pixel_values)
        n = x.shape[0]
        full_mask = segment_mask(segment_ids)
        window_mask = full_mask
        if self.config.is_qwen2_5:
            units = x.reshape(n // self.merge_unit, self.merge_unit, -1)
            x = torch.index_select(units, 0, window_index).reshape(n, -1)
            window_mask = segment_mask(window_segment_ids)
        rotary = self.rotary_pos_emb(position_ids)
        for i, block in enumerate(self.blocks):
            windowed = self.config.is_qwen2_5 and i not in self.full_attention_blocks
            x = block(x, rotary, window_mask if windowed else full_mask)
        x = self.merger(x)
        if self.config.is_qwen2_5:
            x = torch.index_select(x, 0, reverse_index)
        return x
