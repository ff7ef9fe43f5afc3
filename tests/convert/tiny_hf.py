"""Tiny HF checkpoints of every family mm-convert handles, built in code and saved with
``save_pretrained`` (nothing downloaded)."""
from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np
import torch

VOCAB = 100
IMAGE, VIDEO, VISION_START = 97, 98, 95
LLM_LAYERS, VIT_LAYERS = 4, 2

TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LLM_LAYERS,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
)
QWEN_VISION = {
    "qwen2_vl": dict(depth=VIT_LAYERS, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2,
                     patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
    "qwen2_5_vl": dict(depth=VIT_LAYERS, hidden_size=32, out_hidden_size=32, intermediate_size=48, num_heads=4,
                       hidden_act="silu", patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                       in_channels=3, window_size=16, fullatt_block_indexes=[1], tokens_per_second=2),
}


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init: non-trivial norms, biases, class tokens
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def qwen2_vl(family: str = "qwen2_vl", seed: int = 0, tie: bool = False, **vision):
    """``vision`` overrides entries of the vision config (e.g. ``patch_size=14``, the
    data pipeline's)."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)

    config_cls, model_cls = {"qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
                             "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)}[family]
    text = dict(TEXT, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, tie_word_embeddings=tie)
    config = config_cls(text_config=text, vision_config=dict(QWEN_VISION[family], **vision), image_token_id=IMAGE,
                        video_token_id=VIDEO, vision_start_token_id=VISION_START, vocab_size=VOCAB,
                        tie_word_embeddings=tie, attn_implementation="eager")
    torch.manual_seed(seed)
    return _perturb(model_cls(config).float(), seed)


def internvl(text_model_type: str = "qwen2", seed: int = 0, qk_norm: bool = False, vision_heads: int = 4):
    """``vision_heads`` of 8 dims each (3: heads that TP 2 splits unevenly)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    variant = (dict(norm_type="rms_norm", attention_bias=False, use_qk_norm=True) if qk_norm
               else dict(norm_type="layer_norm", attention_bias=True, use_qk_norm=False))
    config = InternVLConfig(
        vision_config=dict(hidden_size=8 * vision_heads, num_hidden_layers=VIT_LAYERS,
                           num_attention_heads=vision_heads, intermediate_size=64,
                           image_size=[28, 28], patch_size=[7, 7], **variant),
        text_config=dict(TEXT, model_type=text_model_type), image_token_id=IMAGE,
        tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(seed)
    return _perturb(InternVLForConditionalGeneration(config).float(), seed)


def llava(seed: int = 0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_hidden_layers=VIT_LAYERS + 1,
                           num_attention_heads=4, intermediate_size=64, image_size=28, patch_size=7,
                           projection_dim=16),
        text_config=dict(TEXT, model_type="llama"), image_token_index=IMAGE, vision_feature_layer=-2,
        tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(seed)
    return _perturb(LlavaForConditionalGeneration(config).float(), seed)


def save(model, directory: str, max_shard_size: str = "200KB") -> str:
    """save_pretrained (sharded, to exercise the index) plus a small tokenizer file to copy."""
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 256}, f)
    return directory


def read_all(directory: str) -> Dict[str, np.ndarray]:
    """Every tensor of a safetensors directory (single or sharded), raw dtype kept."""
    from safetensors.torch import load_file

    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            out.update({k: v for k, v in load_file(os.path.join(directory, name)).items()})
    return out
