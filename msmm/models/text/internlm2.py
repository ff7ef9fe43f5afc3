"""InternLM2 text decoder: packed ``wqkv`` in grouped layout and ``w1/w3/w2`` SwiGLU.

Our module tree uses the shared layer names (self_attn, mlp, input_layernorm, ...) with
InternLM2's own projection names inside; ``msmm.checkpoint.names.INTERNLM2_RULES`` renames
the remaining InternLM2 keys (tok_embeddings, attention, feed_forward, attention_norm,
ffn_norm, output).

``wqkv.weight`` is [G * (R + 2) * D, hidden]: for each of the G key/value groups, the R
query heads of that group, then its key head, then its value head (R = heads / G).
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import (
    ColumnParallelLinear,
    ModuleSpec,
    RowParallelLinear,
    SelfAttention,
    TransformerConfig,
    gpt_layer_spec,
)
from .decoder import CausalLM, hf_text_fields


class InternLM2Attention(SelfAttention):
    def _build_projections(self, config: TransformerConfig) -> None:
        h, std = config.hidden_size, config.init_method_std
        self.queries_per_group = self.num_heads // self.num_groups
        # grouped rows: a contiguous shard holds whole key/value groups
        qkv_out = config.num_query_groups * (self.queries_per_group + 2) * self.head_dim
        sp = config.sequence_parallel
        self.wqkv = ColumnParallelLinear(h, qkv_out, config.add_qkv_bias, std, sequence_parallel=sp)
        self.wo = RowParallelLinear(config.num_attention_heads * self.head_dim, h, config.add_bias_linear, std,
                                    sequence_parallel=sp)

    def project_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = self.wqkv(x)  # [B, L, ...]: the whole sequence also under sequence parallelism
        b, l, r = qkv.shape[0], qkv.shape[1], self.queries_per_group
        qkv = qkv.view(b, l, self.num_groups, r + 2, self.head_dim)
        q, k, v = torch.split(qkv, [r, 1, 1], dim=3)
        return q.reshape(b, l, self.num_heads, self.head_dim), k.squeeze(3), v.squeeze(3)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(x)


class InternLM2MLP(nn.Module):
    """w2(silu(w1(x)) * w3(x)): w1 is the gate, w3 the up projection, w2 the down projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.ffn_hidden_size
        std, sp = config.init_method_std, config.sequence_parallel
        self.w1 = ColumnParallelLinear(h, f, False, std, sequence_parallel=sp)
        self.w3 = ColumnParallelLinear(h, f, False, std, sequence_parallel=sp)
        self.w2 = RowParallelLinear(f, h, False, std, sequence_parallel=sp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


INTERNLM2_ROPE_SCALING = ("linear", "dynamic")  # the kinds modeling_internlm2.py implements


def internlm2_layer_spec() -> ModuleSpec:
    return gpt_layer_spec(attention=InternLM2Attention, mlp=InternLM2MLP)


def internlm2_config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """TransformerConfig from an InternLM2 ``config.json`` dict. RoPE plain or scaled as
    InternLM2's modeling code implements it: linear or dynamic (NTK), HF's formulas."""
    bias = hf.get("bias", False)
    config = TransformerConfig(**hf_text_fields(hf), add_qkv_bias=bias, add_bias_linear=bias)
    scaling = config.rope()
    if scaling is not None and scaling.kind not in INTERNLM2_ROPE_SCALING:
        raise ValueError(f"InternLM2 config: rope_scaling type {scaling.kind!r} is not supported: InternLM2's "
                         f"modeling code implements {' and '.join(INTERNLM2_ROPE_SCALING)} only")
    return config


class InternLM2Decoder(CausalLM):
    """InternLM2 causal LM (InternVL2-2B/8B text model)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, internlm2_layer_spec())
