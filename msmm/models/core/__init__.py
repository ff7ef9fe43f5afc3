"""Shared transformer core: config, layer specs, parallel linears, norms, RoPE, attention, MLP."""
from .attention import (
    SelfAttention,
    cached_attention_mask,
    causal_attention_mask,
    dot_product_attention,
    segment_mask,
    write_cache,
)
from .config import TransformerConfig
from .mlp import MLP, SwiGLUMLP, quick_gelu
from .norm import RMSNorm, build_norm
from .parallel_linear import ColumnParallelLinear, RowParallelLinear
from .rotary import RotaryEmbedding, VisionRotaryEmbedding, apply_rotary, rotate_half
from .spec import ModuleSpec, build_module
from .transformer import TransformerBlock, TransformerLayer, TransformerLayerSubmodules, gpt_layer_spec

__all__ = [
    "ColumnParallelLinear",
    "MLP",
    "ModuleSpec",
    "RMSNorm",
    "RotaryEmbedding",
    "RowParallelLinear",
    "SelfAttention",
    "SwiGLUMLP",
    "TransformerBlock",
    "TransformerConfig",
    "TransformerLayer",
    "TransformerLayerSubmodules",
    "VisionRotaryEmbedding",
    "apply_rotary",
    "build_module",
    "build_norm",
    "cached_attention_mask",
    "causal_attention_mask",
    "dot_product_attention",
    "gpt_layer_spec",
    "quick_gelu",
    "rotate_half",
    "segment_mask",
    "write_cache",
]
