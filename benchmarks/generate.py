"""Decode speed: msmm ``generate`` (static KV cache) vs HF ``generate`` on real torch, same
InternVL model (random weights, built in code), greedy, one image, batch 1.

    python benchmarks/generate.py [--layers 4 --hidden 256 --new 64 --threads 1]

Prints and writes benchmarks/results/generate.json: decode tokens/s of both (prefill
excluded: time(new tokens) - time(1 token), over new - 1 tokens), and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def build(layers: int, hidden: int):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    text = dict(vocab_size=1000, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                max_position_embeddings=4096, model_type="qwen2", tie_word_embeddings=False)
    config = InternVLConfig(vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=128, image_size=[56, 56], patch_size=[14, 14]),
                            text_config=text, image_token_id=999)
    torch.manual_seed(0)
    return InternVLForConditionalGeneration(config).eval()


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from msmm.infer.generate import GenerationConfig, generate
    from msmm.models.internvl import load_internvl

    ref = build(args.layers, args.hidden)
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = load_internvl(d).eval()
    rng = np.random.default_rng(0)
    ids = np.concatenate([[1, 2], [999] * 4, rng.integers(3, 900, args.prompt - 6)])[None]
    pixels = rng.standard_normal((1, 3, 56, 56)).astype(np.float32)
    mask = np.ones_like(ids)

    def hf(n: int):
        with torch.no_grad():
            return ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                pixel_values=torch.tensor(pixels), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=0)

    def msmm(n: int):
        return generate(ours, ids, mask, GenerationConfig(max_new_tokens=n), pixel_values=pixels)

    same = np.array_equal(hf(args.new)[0, ids.shape[1]:].numpy(), msmm(args.new)[0])
    result = {"config": vars(args), "greedy_outputs_equal": bool(same)}
    for name, fn in (("hf", hf), ("msmm", msmm)):
        decode = timed(lambda: fn(args.new)) - timed(lambda: fn(1))
        result[f"{name}_decode_tokens_per_s"] = round((args.new - 1) / decode, 1)
    result["speedup"] = round(result["msmm_decode_tokens_per_s"] / result["hf_decode_tokens_per_s"], 2)
    print(json.dumps(result, indent=1))
    out = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "generate.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
