"""Pre-norm transformer layer and the decoder stack built from a layer spec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SelfAttention
from .config import TransformerConfig
from .mlp import SwiGLUMLP
from .norm import RMSNorm
from .spec import ModuleSpec, build_module


@dataclass
class TransformerLayerSubmodules:
    """Which classes serve a layer's slots. Norms are built as ``cls(hidden_size, eps)``,
    attention and MLP as ``cls(config)``."""

    input_layernorm: ModuleSpec
    self_attention: ModuleSpec
    pre_mlp_layernorm: ModuleSpec
    mlp: ModuleSpec


def gpt_layer_spec(
    attention: type = SelfAttention, mlp: type = SwiGLUMLP, norm: type = RMSNorm
) -> ModuleSpec:
    """The Llama/Qwen2 layer: RMSNorm -> attention -> RMSNorm -> SwiGLU, residual around each."""
    return ModuleSpec(
        TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=ModuleSpec(norm),
            self_attention=ModuleSpec(attention),
            pre_mlp_layernorm=ModuleSpec(norm),
            mlp=ModuleSpec(mlp),
        ),
    )


class TransformerLayer(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(.)). Attribute names follow HF decoder layers."""

    def __init__(self, config: TransformerConfig, submodules: TransformerLayerSubmodules) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.layernorm_epsilon
        self.input_layernorm = build_module(submodules.input_layernorm, h, eps)
        self.self_attn = build_module(submodules.self_attention, config)
        self.post_attention_layernorm = build_module(submodules.pre_mlp_layernorm, h, eps)
        self.mlp = build_module(submodules.mlp, config)
        self.hidden_dropout = config.hidden_dropout

    def forward(
        self,
        x: torch.Tensor,
        rotary: Tuple[torch.Tensor, torch.Tensor],
        mask: Optional[torch.Tensor],
        cache: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    ):
        """With ``cache`` (see ``SelfAttention``) returns (x, updated (keys, values))."""
        attn = self.self_attn(self.input_layernorm(x), rotary, mask, cache)
        new_cache = None  # bound on both branches: MindSpore graph mode requires it
        if cache is not None:
            attn, new_cache = attn
        x = x + F.dropout(attn, self.hidden_dropout, self.training)
        mlp = self.mlp(self.post_attention_layernorm(x))
        x = x + F.dropout(mlp, self.hidden_dropout, self.training)
        return x if cache is None else (x, new_cache)


class TransformerBlock(nn.Module):
    """``num_layers`` layers from one spec, then the final norm."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList([build_module(layer_spec, config) for _ in range(config.num_layers)])
        self.norm = build_module(layer_spec.submodules.input_layernorm, config.hidden_size, config.layernorm_epsilon)

    def forward(
        self,
        x: torch.Tensor,
        rotary: Tuple[torch.Tensor, torch.Tensor],
        mask: Optional[torch.Tensor],
        caches: Optional[Tuple] = None,
        slots: Optional[torch.Tensor] = None,
    ):
        """With ``caches`` (one (keys, values) pair per layer) and ``slots`` [L, Lmax]
        returns (hidden, updated caches)."""
        if caches is None:
            for layer in self.layers:
                x = layer(x, rotary, mask)
            return self.norm(x)
        updated = []
        for layer, (keys, values) in zip(self.layers, caches):
            x, kv = layer(x, rotary, mask, (keys, values, slots))
            updated.append(kv)
        return self.norm(x), tuple(updated)
