"""Write a tiny, self-contained fine-tuning setup for CPU runs: a BPE tokenizer trained in a
second (with the model family's special tokens), a handful of generated images, an
annotation file, and the matching model.json / data.json.

    python examples/tiny/make_tiny_assets.py --family qwen2vl --out tiny_assets
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
CORPUS = ["You are a helpful assistant.", "What colour is the square in the picture?",
          "The square is red.", "The square is green.", "The square is blue.", "Describe the image.",
          "A small coloured square on a grey background."]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def write_tokenizer(directory: str) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=QWEN2_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              additional_special_tokens=QWEN2_SPECIALS[1:])
    fast.save_pretrained(directory)
    return {t: fast.convert_tokens_to_ids(t) for t in QWEN2_SPECIALS} | {"vocab_size": len(fast)}


def write_data(directory: str, samples: int, rng: np.random.Generator) -> str:
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    records = []
    for i in range(samples):
        name = list(COLOURS)[i % len(COLOURS)]
        image = np.full((56, 56, 3), 128, np.uint8)
        x, y = rng.integers(0, 28, size=2)
        image[y:y + 28, x:x + 28] = COLOURS[name]
        Image.fromarray(image).save(os.path.join(directory, "images", f"{i}.png"))
        records.append({"messages": [{"role": "user", "content": "<image>What colour is the square in the picture?"},
                                     {"role": "assistant", "content": f"The square is {name}."}],
                        "images": [f"images/{i}.png"]})
    path = os.path.join(directory, "train.json")
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
    return path


def qwen2vl_model_json(ids: dict) -> dict:
    vocab = ids["vocab_size"]
    return {
        "model_id": "qwen2_vl",
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "image_encoder": {
            "vision_encoder": {"model_id": "qwen2_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                               "ffn_hidden_size": 64, "patch_size": 14, "freeze": True},
            "vision_projector": {"model_id": "patch_merger", "freeze": False},
        },
        "text_decoder": {"model_id": "qwen2", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                         "num_query_groups": 2, "ffn_hidden_size": 128, "vocab_size": vocab, "add_qkv_bias": True,
                         "rotary_base": 10000.0, "mrope_section": [2, 3, 3], "freeze": False},
    }


def qwen2vl_data_json(directory: str, annotation: str) -> dict:
    return {
        "dataset_param": {
            "dataset_type": "huggingface",
            "preprocess_parameters": {"model_name_or_path": os.path.join(directory, "tokenizer"),
                                      "image_min_pixels": 3136, "image_max_pixels": 3136},
            "basic_parameters": {"template": "qwen2vl", "dataset_dir": directory, "dataset": annotation,
                                 "cutoff_len": 128},
            "tokenizer_config": {"from_pretrained": os.path.join(directory, "tokenizer")},
        },
        "dataloader_param": {"shuffle": True, "drop_last": True, "num_workers": 0, "seed": 1234},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("qwen2vl",), default="qwen2vl")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    ids = write_tokenizer(os.path.join(out, "tokenizer"))
    annotation = write_data(out, args.samples, np.random.default_rng(0))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(qwen2vl_model_json(ids), f, indent=2)
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(qwen2vl_data_json(out, annotation), f, indent=2)
    print(f"tiny {args.family} assets in {out}")


if __name__ == "__main__":
    main()
