"""Text decoders: Qwen2/2.5, Llama/Vicuna, InternLM2, and the causal-LM head and loss."""
from .decoder import IGNORE_INDEX, CausalLM, DecoderModel, causal_lm_loss
from .internlm2 import InternLM2Attention, InternLM2Decoder, InternLM2MLP, internlm2_config_from_hf
from .llama import LlamaDecoder, llama_config_from_hf
from .qwen2 import Qwen2Decoder, qwen2_config_from_hf

__all__ = [
    "IGNORE_INDEX",
    "CausalLM",
    "DecoderModel",
    "InternLM2Attention",
    "InternLM2Decoder",
    "InternLM2MLP",
    "LlamaDecoder",
    "Qwen2Decoder",
    "causal_lm_loss",
    "internlm2_config_from_hf",
    "llama_config_from_hf",
    "qwen2_config_from_hf",
]
