"""Llama / Vicuna text decoder (no biases, RMSNorm, SwiGLU, RoPE, optional GQA)."""
from __future__ import annotations

from typing import Any, Mapping

from ..core import ModuleSpec, TransformerConfig, gpt_layer_spec
from .decoder import CausalLM, hf_text_fields


def llama_layer_spec() -> ModuleSpec:
    return gpt_layer_spec()


def llama_config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """TransformerConfig from a Llama ``config.json`` dict (RoPE plain or scaled: linear,
    dynamic, yarn)."""
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key, False):
            raise ValueError(f"Llama config: {key}=true is not supported (no Llama/Vicuna checkpoint uses it)")
    return TransformerConfig(
        **hf_text_fields(hf),
        kv_channels=hf.get("head_dim"),
        attention_dropout=hf.get("attention_dropout", 0.0),
    )


class LlamaDecoder(CausalLM):
    """Llama/Vicuna causal LM; state-dict names equal HF LlamaForCausalLM's."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, llama_layer_spec())
