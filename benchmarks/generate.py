"""Generation speed: msmm ``generate`` on MindSpore (msmm.models through the auto_convert
hook, as ``msmm-infer`` runs them: static KV cache; prompt (embedding + vision + splice),
prefill and decode step each one compiled graph) vs HF ``generate`` on real torch, same
InternVL weights (random, built in code), greedy, one image, batch 1, in one process.

    python benchmarks/generate.py [--layers 4 --hidden 256 --new 64 --threads 1 --repeats 5]

Prints and writes benchmarks/results/generate.json: for both, the time from the call to the
first new token (prompt) and the decode time per later token (HF through a ``streamer``
clock, msmm through ``generate_stream``; medians of ``repeats`` alternating runs), their
ratios, and a profile of one msmm decode step: the compiled step alone (graph launch +
compute, inputs fixed), the same step in PyNative (op by op), and the rest of the loop on
the host (per-token time minus the compiled step).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_timers(model, prompt_len: int, new: int):
    """(compiled, pynative): each times one decode step of ``model``'s decoder in seconds
    (compiled: ``decode_step``; pynative: the same calls op by op), on fixed inputs of the
    benchmark's cache length."""
    from msmm.infer.generate import CACHE_BUCKET, decode_step, torch_of

    ms_torch = torch_of(model)
    decoder = model.get_decoder()
    total = -(-(prompt_len + new) // CACHE_BUCKET) * CACHE_BUCKET
    caches = decoder.init_kv_cache(1, total, ms_torch.float32)
    args = (ms_torch.tensor(np.array([[5]])), ms_torch.tensor(np.array([[prompt_len]])),
            ms_torch.tensor(np.array([prompt_len])), ms_torch.tensor(np.ones((1, total), np.int64)))
    slot = ms_torch.tensor(np.eye(total, dtype=np.float32)[prompt_len: prompt_len + 1])

    def pynative(token, position, index, mask, caches):
        return decoder.forward_with_cache(decoder.get_input_embeddings()(token), position, mask, caches, slot)

    timers = []
    for fn in (decode_step(decoder, ms_torch), pynative):
        fn(*args, caches)[0].asnumpy()  # compile / warm up
        timers.append(lambda fn=fn: seconds(lambda: fn(*args, caches)[0].asnumpy()))
    return tuple(timers)


class Clock:
    """HF ``streamer``: the time of each ``put`` (the prompt first, then each new token)."""

    def __init__(self) -> None:
        self.times = []

    def put(self, _ids) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def timed(tokens) -> tuple:
    """(seconds to the first token, seconds per later token) of an iterator of tokens."""
    start = time.perf_counter()
    stamps = [time.perf_counter() for _ in tokens]
    return stamps[0] - start, (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ms-threads", type=int, default=0, help="MindSpore runtime threads (0: its default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = build(args.layers, args.hidden)  # real torch: imported before the hook

    from msmm import runtime
    from msmm.infer.cli import load_model

    runtime.start()
    if args.ms_threads:
        import mindspore

        mindspore.set_context(runtime_num_threads=args.ms_threads)
    from msmm.infer.generate import GenerationConfig, generate_stream

    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = load_model({"family": "internvl", "from_pretrained": d})
    rng = np.random.default_rng(0)
    ids = np.concatenate([[1, 2], [999] * 4, rng.integers(3, 900, args.prompt - 6)])[None]
    pixels = rng.standard_normal((1, 3, 56, 56)).astype(np.float32)
    mask = np.ones_like(ids)

    def hf():
        clock = Clock()
        with torch.no_grad():
            start = time.perf_counter()
            out = ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                               pixel_values=torch.tensor(pixels), max_new_tokens=args.new,
                               min_new_tokens=args.new, do_sample=False, pad_token_id=0, streamer=clock)
        first, rest = clock.times[1], clock.times[2:]
        return out[0, ids.shape[1]:].numpy(), (first - start, (rest[-1] - first) / len(rest))

    def msmm():
        tokens = []
        times = timed(t for t in generate_stream(ours, ids, mask, GenerationConfig(max_new_tokens=args.new),
                                                 pixel_values=pixels) if not tokens.append(t[0]))
        return np.array(tokens), times

    same = np.array_equal(hf()[0], msmm()[0])  # also compiles
    result = {"config": vars(args), "msmm_backend": "mindspore (auto_convert + adapters, compiled graphs)",
              "greedy_outputs_equal": bool(same)}
    compiled_step, pynative_step = step_timers(ours, ids.shape[1], args.new)
    runs = {name: [] for name in ("hf", "msmm")}
    steps = []
    for _ in range(args.repeats):  # alternate, so all see the same machine load
        for name, fn in (("hf", hf), ("msmm", msmm)):
            runs[name].append(fn()[1])
        steps += [compiled_step() for _ in range(20)]
    for name, r in runs.items():
        first, per_token = statistics.median(t[0] for t in r), statistics.median(t[1] for t in r)
        result[f"{name}_decode_tokens_per_s"] = round(1 / per_token, 1)
        result[f"{name}_decode_ms_per_token"] = round(1000 * per_token, 2)
        result[f"{name}_prompt_to_first_token_ms"] = round(1000 * first, 1)
    result["speedup"] = round(result["msmm_decode_tokens_per_s"] / result["hf_decode_tokens_per_s"], 2)
    result["first_token_speedup"] = round(result["hf_prompt_to_first_token_ms"]
                                          / result["msmm_prompt_to_first_token_ms"], 2)
    profile = {"compiled_step_ms": round(1000 * statistics.median(steps), 2),
               "pynative_step_ms": round(1000 * statistics.median(pynative_step() for _ in range(5)), 2)}
    profile["host_loop_ms"] = round(result["msmm_decode_ms_per_token"] - profile["compiled_step_ms"], 2)
    result["msmm_decode_profile"] = profile
    print(json.dumps(result, indent=1))
    out = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "generate.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
