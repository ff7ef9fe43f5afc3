"""Tiny HF models and fixed-shape batches shared by the training tests (torch side only)."""
from __future__ import annotations

import re
from typing import Dict, List

import numpy as np

# ---- Qwen2-VL -------------------------------------------------------------------------------
QWEN_VOCAB, VISION_START, VISION_END, IMAGE = 100, 95, 96, 97
QWEN_TEXT = dict(
    vocab_size=QWEN_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
    rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=False,
)
QWEN_VISION = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=4,
                   spatial_merge_size=2, temporal_patch_size=2, in_channels=3)

# ---- InternVL (HF-native, Qwen2 text) -------------------------------------------------------
INTERN_VOCAB = 128
IMG_CONTEXT = INTERN_VOCAB - 1
TILE, TOKENS_PER_TILE = 28, 4
INTERN_TEXT = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=96, vocab_size=INTERN_VOCAB, max_position_embeddings=256, rms_norm_eps=1e-6,
                   rope_theta=10000.0, tie_word_embeddings=False, model_type="qwen2")
INTERN_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     image_size=[TILE, TILE], patch_size=[7, 7], norm_type="layer_norm", attention_bias=True,
                     use_qk_norm=False)

# HF in-memory parameter names -> msmm names (= checkpoint names)
NAME_RULES = {
    "qwen2_vl": [(r"^model\.visual\.", "visual."), (r"^model\.language_model\.", "model.")],
    "internvl": [(r"^model\.vision_tower\.", "vision_tower."), (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
                 (r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head.")],
}


def ours(family: str, hf_name: str) -> str:
    for pattern, repl in NAME_RULES[family]:
        hf_name = re.sub(pattern, repl, hf_name)
    return hf_name


def hf_model(family: str, seed: int = 0):
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    if family == "qwen2_vl":
        config = Qwen2VLConfig(text_config=QWEN_TEXT, vision_config=QWEN_VISION, image_token_id=IMAGE,
                               video_token_id=IMAGE + 1, vision_start_token_id=VISION_START, vocab_size=QWEN_VOCAB,
                               tie_word_embeddings=False, attn_implementation="eager")
        model = Qwen2VLForConditionalGeneration(config).float()
    else:
        config = InternVLConfig(vision_config=INTERN_VISION, text_config=INTERN_TEXT, image_token_id=IMG_CONTEXT,
                                tie_word_embeddings=False, attn_implementation="eager")
        model = InternVLForConditionalGeneration(config).float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init: non-trivial norms, biases, class token
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _rows(rng: np.random.Generator, prefix: List[int], text: int, vocab: int, lengths: List[int]):
    """Right-padded rows: ``prefix`` (vision tokens) + ``text`` random tokens, cut to ``lengths``."""
    length = len(prefix) + 2 + text
    input_ids = np.zeros((len(lengths), length), np.int64)
    mask = np.zeros_like(input_ids)
    for i, n in enumerate(lengths):
        row = [1, 2] + prefix + rng.integers(3, vocab, size=text).tolist()
        input_ids[i, :n], mask[i, :n] = row[:n], 1
    return input_ids, mask


def make_batches(family: str, count: int, micro_batch_size: int = 2, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """``count`` micro-batches of one shape (one compiled graph): each row one image and text,
    the second row shorter (padding); labels -100 on prompt, vision tokens and padding."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        lengths = [None] * micro_batch_size
        if family == "qwen2_vl":
            grid = (1, 4, 4)
            prefix = [VISION_START] + [IMAGE] * (16 // 4) + [VISION_END]
            full = 2 + len(prefix) + 12
            lengths = [full] + [full - 3] * (micro_batch_size - 1)
            input_ids, mask = _rows(rng, prefix, 12, VISION_START, lengths)
            vision = {"pixel_values": rng.standard_normal((16 * micro_batch_size, 3 * 2 * 4 * 4)).astype(np.float32),
                      "image_grid_thw": np.array([grid] * micro_batch_size, np.int64)}
            vision_token = IMAGE
        else:
            prefix = [IMG_CONTEXT] * TOKENS_PER_TILE
            full = 2 + len(prefix) + 12
            lengths = [full] + [full - 3] * (micro_batch_size - 1)
            input_ids, mask = _rows(rng, prefix, 12, IMG_CONTEXT, lengths)
            vision = {"pixel_values": rng.standard_normal((micro_batch_size, 3, TILE, TILE)).astype(np.float32)}
            vision_token = IMG_CONTEXT
        labels = np.where((mask == 0) | (input_ids == vision_token) | (input_ids == VISION_START) | (input_ids == VISION_END),
                          -100, input_ids) if family == "qwen2_vl" else np.where((mask == 0) | (input_ids == vision_token), -100, input_ids)
        labels[:, :2] = -100
        batches.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels, **vision})
    return batches
