"""Qwen2 / Qwen2.5 text decoder: Llama layout plus q/k/v bias, grouped-query attention."""
from __future__ import annotations

from typing import Any, Mapping

from ..core import ModuleSpec, TransformerConfig, gpt_layer_spec
from .decoder import CausalLM, hf_text_fields


def qwen2_layer_spec() -> ModuleSpec:
    return gpt_layer_spec()


def qwen2_config_from_hf(hf: Mapping[str, Any]) -> TransformerConfig:
    """TransformerConfig from a Qwen2 ``config.json`` dict (also the ``text_config`` of
    Qwen2-VL / Qwen2.5-VL, whose ``rope_scaling.mrope_section`` turns on M-RoPE); RoPE plain
    or scaled (linear, dynamic, yarn)."""
    rope_scaling = hf.get("rope_scaling")
    return TransformerConfig(
        **hf_text_fields(hf),
        add_qkv_bias=True,
        mrope_section=rope_scaling.get("mrope_section") if isinstance(rope_scaling, Mapping) else None,
        attention_dropout=hf.get("attention_dropout", 0.0),
    )


class Qwen2Decoder(CausalLM):
    """Qwen2/2.5 causal LM; state-dict names equal HF Qwen2ForCausalLM's."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, qwen2_layer_spec())
