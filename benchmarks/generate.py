"""Generation speed: msmm ``generate`` on MindSpore (msmm.models through the auto_convert
hook, as ``msmm-infer`` runs them: static KV cache; prompt (embedding + vision + splice),
prefill and decode steps compiled graphs) vs HF ``generate`` on real torch, same InternVL
weights (random, built in code), one image, batch 1.

    python benchmarks/generate.py [--layers 4 --hidden 256 --new 64 --threads 1 --rounds 7]

Both sides get the same thread budget: ``--threads`` torch threads and as many MindSpore
runtime threads (``--ms-threads`` overrides; 0 leaves MindSpore's default).

Each side runs in its own worker process: the HF worker never imports MindSpore (checked:
MindSpore in a process slows torch down on some CPUs, issue 18), the msmm worker never runs
torch. The parent imports neither; it asks the workers for one round at a time, alternating,
so both see the same machine load, and takes medians over the rounds.

A round times, from the call: the first new token (prompt latency) and each later token
(decode), wall and CPU time; for HF through a ``streamer`` clock, for msmm through
``generate_stream``. msmm runs greedy with 1 decode step per graph call (what streaming uses)
and with ``STEPS_PER_CALL`` (what ``generate`` uses); sampling (top-k / top-p, fixed seed) on
the device and, for comparison, on the host from the step's logits (msmm-serve's path). The
greedy tokens of every msmm variant must equal HF's. A profile of one decode step: the
compiled graph alone on fixed inputs (launch + kernels), per step for 1 and for
``STEPS_PER_CALL`` steps per call; the rest of a greedy token's time is the host loop.

Writes benchmarks/results/generate.json (with the machine's CPU, flags and versions).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
IMAGE = 999


def build_hf(layers: int, hidden: int):
    """The tiny HF InternVL (Qwen2 text), seeded."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    text = dict(vocab_size=1000, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                max_position_embeddings=4096, model_type="qwen2", tie_word_embeddings=False)
    config = InternVLConfig(vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=128, image_size=[56, 56], patch_size=[14, 14]),
                            text_config=text, image_token_id=IMAGE)
    torch.manual_seed(0)
    return InternVLForConditionalGeneration(config).eval()


def clocked(tokens: Iterable[Any]) -> Tuple[List[Any], Dict[str, float]]:
    """The items of ``tokens`` and their times from the call: to the first (wall ms) and per
    later item (wall and CPU ms)."""
    wall = time.perf_counter()
    items, stamps = [], []
    for token in tokens:
        items.append(token)
        stamps.append((time.perf_counter(), time.process_time()))
    n = len(stamps) - 1
    return items, {"first_token_ms": 1000 * (stamps[0][0] - wall),
                   "decode_ms_per_token": 1000 * (stamps[-1][0] - stamps[0][0]) / n,
                   "decode_cpu_ms_per_token": 1000 * (stamps[-1][1] - stamps[0][1]) / n}


# ---- the workers: one JSON line in (a round to run), one JSON line out

def hf_worker(args: argparse.Namespace, directory: str, inputs: Dict[str, np.ndarray]) -> Dict[str, Callable]:
    import torch

    torch.set_num_threads(args.threads)
    model = build_hf(args.layers, args.hidden)
    model.save_pretrained(directory)

    def greedy() -> Dict[str, Any]:
        stamps = []

        class Clock:
            """HF ``streamer``: the time of each ``put`` (the prompt first, then each new token)."""

            def put(self, ids) -> None:
                stamps.append((time.perf_counter(), time.process_time()))

            def end(self) -> None:
                pass

        wall = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**{k: torch.tensor(v) for k, v in inputs.items()}, max_new_tokens=args.new,
                                 min_new_tokens=args.new, do_sample=False, pad_token_id=0, streamer=Clock())
        stamps = stamps[1:]  # the first put is the prompt
        n = len(stamps) - 1
        return {"tokens": out[0, inputs["input_ids"].shape[1]:].tolist(),
                "first_token_ms": 1000 * (stamps[0][0] - wall),
                "decode_ms_per_token": 1000 * (stamps[-1][0] - stamps[0][0]) / n,
                "decode_cpu_ms_per_token": 1000 * (stamps[-1][1] - stamps[0][1]) / n}

    assert "mindspore" not in sys.modules, "the HF worker imported MindSpore"
    return {"hf": greedy}


def msmm_worker(args: argparse.Namespace, directory: str, inputs: Dict[str, np.ndarray]) -> Dict[str, Callable]:
    from msmm import runtime

    runtime.start()
    if args.ms_threads:
        import mindspore

        mindspore.set_context(runtime_num_threads=args.ms_threads)
    from msmm.infer.cli import load_model
    from msmm.infer.generate import (STEPS_PER_CALL, GenerationConfig, _numpy, cache_length, choose, decode_block,
                                     decode_step, generate_stream, prefill, process_logits, torch_of)

    model = load_model({"family": "internvl", "from_pretrained": directory})
    torch = torch_of(model)
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    sampled = GenerationConfig(max_new_tokens=args.new, do_sample=True, top_k=50, top_p=0.9, temperature=0.8, seed=0)

    def stream(config: GenerationConfig, steps: int) -> Dict[str, Any]:
        tokens, times = clocked(generate_stream(model, ids, mask, config, steps, pixel_values=pixels))
        return {"tokens": [int(t[0]) for t in tokens], **times}

    def host_sampling() -> Dict[str, Any]:
        """Sampling chosen on the host from each step's logits (numpy), one step per call."""
        def tokens():
            rng = np.random.default_rng(0)
            total = cache_length(ids.shape[1], args.new)
            state = prefill(model, ids, mask, total, pixel_values=pixels)
            seen = ids
            step = decode_step(state.decoder, torch)
            token = choose(process_logits(_numpy(state.logits), seen, sampled), sampled, rng)
            position = torch.tensor(state.next_position[..., None])
            index = torch.tensor(np.full(1, ids.shape[1], np.int64))
            full = torch.tensor(np.ones((1, total), np.int64))
            caches = state.caches
            for _ in range(args.new):
                yield token
                logits, _, position, index, caches = step(torch.tensor(token[:, None]), position, index, full, caches)
                token = choose(process_logits(_numpy(logits), seen, sampled), sampled, rng)

        with torch.no_grad():
            return clocked(tokens())[1]

    def profile() -> Dict[str, Any]:
        """The compiled decode graph alone on fixed inputs, ms per step, 1 and STEPS_PER_CALL steps per call."""
        decoder = model.get_decoder()
        total = cache_length(ids.shape[1], args.new, STEPS_PER_CALL)
        caches = decoder.init_kv_cache(1, total, torch.float32)
        fixed = (torch.tensor(np.array([[5]])), torch.tensor(np.array([[ids.shape[1]]])),
                 torch.tensor(np.array([ids.shape[1]])), torch.tensor(np.ones((1, total), np.int64)))
        seen, controls = torch.tensor(np.zeros((1, 1), np.float32)), torch.tensor(np.ones(4, np.float32))
        out = {}
        with torch.no_grad():
            for steps in (1, STEPS_PER_CALL):
                block = decode_block(decoder, torch, steps, False, False)
                uniforms = torch.tensor(np.zeros((1, steps), np.float32))
                call = lambda: _numpy(block(*fixed, seen, controls, uniforms, caches)[0])  # noqa: E731
                call()
                times = []
                for _ in range(20):
                    start = time.perf_counter()
                    call()
                    times.append((time.perf_counter() - start) / steps)
                out[f"graph_ms_per_step_{steps}_per_call"] = 1000 * statistics.median(times)
        return out

    runs = {"msmm_1_step_per_call": lambda: stream(GenerationConfig(max_new_tokens=args.new), 1),
            "msmm": lambda: stream(GenerationConfig(max_new_tokens=args.new), STEPS_PER_CALL),
            "msmm_sampling_on_device": lambda: stream(sampled, STEPS_PER_CALL),
            "msmm_sampling_on_host_1_step_per_call": host_sampling,
            "msmm_graph_profile": profile}
    assert "torch" not in sys.modules or not hasattr(sys.modules["torch"], "_C"), "the msmm worker imported torch"
    return runs


def worker(args: argparse.Namespace) -> None:
    """Serves rounds on stdin/stdout: ``{"run": name}`` -> ``{name: result}``."""
    inputs = dict(np.load(args.inputs))
    runs = (hf_worker if args.worker == "hf" else msmm_worker)(args, args.directory, inputs)
    print(json.dumps({"ready": sorted(runs)}), flush=True)
    for line in sys.stdin:
        name = json.loads(line)["run"]
        print(json.dumps({name: runs[name]()}), flush=True)


class Worker:
    """A worker process of this script."""

    def __init__(self, kind: str, args: argparse.Namespace, directory: str, inputs: str) -> None:
        argv = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--directory", directory,
                "--inputs", inputs] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                       if k in ("layers", "hidden", "new", "threads", "ms_threads")]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.runs = self._read()["ready"]

    def _read(self) -> Dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark worker died (exit {self.process.wait()})")
        return json.loads(line)

    def run(self, name: str) -> Dict[str, Any]:
        self.process.stdin.write(json.dumps({"run": name}) + "\n")
        self.process.stdin.flush()
        return self._read()[name]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def median_of(results: List[Dict[str, Any]]) -> Dict[str, float]:
    return {k: round(statistics.median(r[k] for r in results), 3) for k in results[0] if k != "tokens"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--ms-threads", type=int, default=None,
                        help="MindSpore runtime threads (default: --threads, the budget torch gets; 0: MindSpore's "
                             "default)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker", choices=("hf", "msmm"), help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ms_threads is None:
        args.ms_threads = args.threads
    if args.worker:
        return worker(args)
    from benchmarks._env import machine

    rng = np.random.default_rng(0)
    ids = np.concatenate([[1, 2], [IMAGE] * 4, rng.integers(3, 900, args.prompt - 6)])[None].astype(np.int64)
    with tempfile.TemporaryDirectory() as d:
        inputs = os.path.join(d, "inputs.npz")
        np.savez(inputs, input_ids=ids, attention_mask=np.ones_like(ids),
                 pixel_values=rng.standard_normal((1, 3, 56, 56)).astype(np.float32))
        hf = Worker("hf", args, d, inputs)  # saves the weights the msmm worker loads
        ms = Worker("msmm", args, d, inputs)
        expected = hf.run("hf")["tokens"]
        for name in ("msmm", "msmm_1_step_per_call"):  # also compiles
            got = ms.run(name)["tokens"]
            if got != expected:
                raise AssertionError(f"{name}: greedy tokens {got} differ from HF generate's {expected}")
        ms.run("msmm_sampling_on_device"), ms.run("msmm_sampling_on_host_1_step_per_call")
        results: Dict[str, List[Dict[str, Any]]] = {name: [] for name in ["hf"] + ms.runs}
        for _ in range(args.rounds):  # alternating, so all see the same machine load
            results["hf"].append(hf.run("hf"))
            for name in ms.runs:
                results[name].append(ms.run(name))
        hf.close()
        ms.close()
    result: Dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if v is not None
                                         and k not in ("worker", "directory", "inputs")},
                              "machine": machine(), "greedy_outputs_equal": True,
                              "msmm_backend": "mindspore (auto_convert + adapters, compiled graphs)"}
    for name, rounds in results.items():
        result[name] = median_of(rounds)
    hf_ms = result["hf"]["decode_ms_per_token"]
    result["decode_speedup_vs_hf"] = {name: round(hf_ms / result[name]["decode_ms_per_token"], 2)
                                      for name in results if name.startswith("msmm") and "profile" not in name}
    result["decode_cpu_speedup_vs_hf"] = {
        name: round(result["hf"]["decode_cpu_ms_per_token"] / result[name]["decode_cpu_ms_per_token"], 2)
        for name in result["decode_speedup_vs_hf"]}
    result["first_token_speedup_vs_hf"] = round(result["hf"]["first_token_ms"] / result["msmm"]["first_token_ms"], 2)
    print(json.dumps(result, indent=1))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "generate.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
