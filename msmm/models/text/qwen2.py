"""Qwen2 / Qwen2.5 text decoder: Llama layout plus q/k/v bias, grouped-query attention."""
from __future__ import annotations

from typing import Any, Mapping

from ..core import ModuleSpec, TransformerConfig, gpt_layer_spec
from .decoder import CausalLM


def qwen2_layer_spec() -> ModuleSpec:
    return gpt_layer_spec()


def qwen2_config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """TransformerConfig from a Qwen2 ``config.json`` dict (also the ``text_config`` of
    Qwen2-VL / Qwen2.5-VL, whose ``rope_scaling.mrope_section`` turns on M-RoPE)."""
    rope_scaling = hf.get("rope_scaling") or {}
    return TransformerConfig(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        num_attention_heads=hf["num_attention_heads"],
        num_query_groups=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        ffn_hidden_size=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        add_qkv_bias=True,
        rotary_base=hf.get("rope_theta", 10000.0),
        mrope_section=rope_scaling.get("mrope_section"),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        pad_token_id=hf.get("pad_token_id"),
        init_method_std=hf.get("initializer_range", 0.02),
        attention_dropout=hf.get("attention_dropout", 0.0),
    )


class Qwen2Decoder(CausalLM):
    """Qwen2/2.5 causal LM; state-dict names equal HF Qwen2ForCausalLM's."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, qwen2_layer_spec())
