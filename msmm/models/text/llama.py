"""Llama / Vicuna text decoder (no biases, RMSNorm, SwiGLU, RoPE, optional GQA)."""
from __future__ import annotations

from typing import Any, Mapping

from ..core import ModuleSpec, TransformerConfig, gpt_layer_spec
from .decoder import CausalLM


def llama_layer_spec() -> ModuleSpec:
    return gpt_layer_spec()


def llama_config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """TransformerConfig from a Llama ``config.json`` dict. Plain RoPE only."""
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key, False):
            raise ValueError(f"Llama config: {key}=true is not supported (no Llama/Vicuna checkpoint uses it)")
    if hf.get("rope_scaling"):
        raise ValueError(f"Llama config: rope_scaling={hf['rope_scaling']!r} is not supported, only plain RoPE")
    return TransformerConfig(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        num_attention_heads=hf["num_attention_heads"],
        num_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        ffn_hidden_size=hf["intermediate_size"],
        kv_channels=hf.get("head_dim"),
        vocab_size=hf["vocab_size"],
        layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        rotary_base=hf.get("rope_theta", 10000.0),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        pad_token_id=hf.get("pad_token_id"),
        init_method_std=hf.get("initializer_range", 0.02),
        attention_dropout=hf.get("attention_dropout", 0.0),
    )


class LlamaDecoder(CausalLM):
    """Llama/Vicuna causal LM; state-dict names equal HF LlamaForCausalLM's."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, llama_layer_spec())
