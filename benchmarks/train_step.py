"""Training-step throughput: msmm (MindSpore graph mode) vs HF transformers on torch eager and
torch.compile, same Qwen2-VL configs, same batch, fp32, 2 threads.

One full step = forward + backward + gradient clipping + AdamW update. Each backend runs in its
own process (so peak RSS is its own): 3 warm-up steps (compilation), then the median of 10
timed steps. msmm's step is also split into its phases (compiled forward+backward, gradient
norm, AdamW update) and torch eager's into forward+backward and clip+update. The machine is
shared, so msmm and torch eager run alternately for ``--rounds`` rounds and the reported
ratio is the median of the per-round ratios (torch.compile runs once); the ratio of CPU time
per step (``time.process_time``, all threads) is reported too, being less sensitive to other
processes than wall time. ``--compare-async`` adds an msmm run per round with MindSpore's
asynchronous host pipeline (``MS_DEV_HOST_BLOCKING_RUN=0``, msmm's behaviour before
``msmm.runtime``), to measure what running it inline buys in the same run.

    python benchmarks/train_step.py --compare-async    # writes benchmarks/train_step.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2
WARMUP, STEPS = 3, 10
CONFIGS = {
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2), vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4),
                 batch=2, text_tokens=48, grid=(1, 8, 8)),
    "small": dict(text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=4), vision=dict(depth=4, embed_dim=256, hidden_size=256, num_heads=8),
                  batch=2, text_tokens=192, grid=(1, 16, 16)),
}
VOCAB, VISION_START, VISION_END, IMAGE = 1024, 1000, 1001, 1002


def hf_config(name: str) -> dict:
    c = CONFIGS[name]
    text = dict(vocab_size=VOCAB, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
                rope_scaling={"type": "mrope", "mrope_section": [c["text"]["hidden_size"] // c["text"]["num_attention_heads"] // 8,
                                                                 3 * (c["text"]["hidden_size"] // c["text"]["num_attention_heads"]) // 16,
                                                                 3 * (c["text"]["hidden_size"] // c["text"]["num_attention_heads"]) // 16]},
                tie_word_embeddings=False, **c["text"])
    vision = dict(mlp_ratio=4, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, **c["vision"])
    return dict(model_type="qwen2_vl", text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=IMAGE + 1,
                vision_start_token_id=VISION_START, vocab_size=VOCAB, tie_word_embeddings=False)


def make_batch(name: str):
    import numpy as np

    c = CONFIGS[name]
    rng = np.random.default_rng(0)
    t, h, w = c["grid"]
    image = [VISION_START] + [IMAGE] * (t * h * w // 4) + [VISION_END]
    rows = [image + rng.integers(0, 999, size=c["text_tokens"]).tolist() for _ in range(c["batch"])]
    input_ids = np.array(rows, np.int64)
    labels = np.where(input_ids >= VISION_START, -100, input_ids)
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "labels": labels,
            "pixel_values": rng.standard_normal((c["batch"] * t * h * w, 3 * 2 * 14 * 14)).astype(np.float32),
            "image_grid_thw": np.array([c["grid"]] * c["batch"], np.int64)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_torch(name: str, compiled: bool) -> dict:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    cfg = hf_config(name)
    cfg.pop("model_type")
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**cfg, attn_implementation="sdpa")).float().train()
    batch = {k: torch.tensor(v) for k, v in make_batch(name).items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    def fwd_bwd():
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss

    fb = torch.compile(fwd_bwd) if compiled else fwd_bwd
    times, cpu, phases = [], [], {"forward_backward": [], "clip_and_update": []}
    for i in range(WARMUP + STEPS):
        cpu0 = time.process_time()
        start = time.perf_counter()
        opt.zero_grad()
        fb()
        mid = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        end = time.perf_counter()
        if i >= WARMUP:
            times.append(end - start)
            cpu.append(time.process_time() - cpu0)
            phases["forward_backward"].append(mid - start)
            phases["clip_and_update"].append(end - mid)
    return {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu),
            "phases_s": {k: statistics.median(v) for k, v in phases.items()},
            "peak_rss_mb": peak_rss_mb()}


def run_msmm(name: str) -> dict:
    sys.path.insert(0, REPO)
    from msmm import runtime

    runtime.start("CPU")  # keeps the msmm_async worker's MS_DEV_HOST_BLOCKING_RUN=0
    import mindspore

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
    mindspore.set_context(runtime_num_threads=THREADS)  # plus OMP_NUM_THREADS from the parent
    from msmm.models.qwen2_vl import Qwen2VL, Qwen2VLConfig
    from msmm.runtime import async_queue_threads
    from msmm.train.trainer import InputBuilder, TrainConfig, Trainer

    mindspore.set_seed(0)
    model = Qwen2VL(Qwen2VLConfig.from_hf(hf_config(name)))
    batch = make_batch(name)

    class Same:
        def __iter__(self):
            while True:
                yield batch

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    config = TrainConfig(train_iters=WARMUP + STEPS, global_batch_size=CONFIGS[name]["batch"],
                         micro_batch_size=CONFIGS[name]["batch"], lr=1e-5, log_interval=10**9)
    trainer = Trainer(model, config, Same())
    step, inputs = trainer.step_fn, InputBuilder(model)
    times, cpu, phases = [], [], {"inputs_and_metadata": [], "forward_backward": [], "grad_norm": [], "adamw_update": []}
    for i in range(WARMUP + STEPS):
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        tensors = inputs(batch)
        t1 = time.perf_counter()
        step.forward_backward(tensors)
        t2 = time.perf_counter()
        norm = step.grad_norm(1.0)
        t3 = time.perf_counter()
        step.update(1e-5, min(1.0, 1.0 / (float(norm) + 1e-6)))
        step.optimizer.step.asnumpy()
        t4 = time.perf_counter()
        if i >= WARMUP:
            times.append(t4 - t0)
            cpu.append(time.process_time() - cpu0)
            for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[key].append(dt)
    return {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu),
            "phases_s": {k: statistics.median(v) for k, v in phases.items()},
            "peak_rss_mb": peak_rss_mb(), "host_pipeline_threads": async_queue_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "train_step.json"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-async", action="store_true",
                        help="also run msmm with MindSpore's asynchronous host pipeline (MS_DEV_HOST_BLOCKING_RUN=0, "
                             "the behaviour before msmm.train set it) each round")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, name = args.worker
        result = run_msmm(name) if backend.startswith("msmm") else run_torch(name, backend == "torch_compile")
        print("RESULT " + json.dumps(result))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), GLOG_v="3", PYTHONPATH=REPO)
    results = {"threads": THREADS, "dtype": "float32", "warmup_steps": WARMUP, "timed_steps": STEPS,
               "rounds": args.rounds, "configs": {}}
    def run(backend: str, name: str) -> dict:
        worker_env = dict(env, MS_DEV_HOST_BLOCKING_RUN="0") if backend == "msmm_async" else env
        proc = subprocess.run([sys.executable, __file__, "--worker", backend, name], env=worker_env, capture_output=True,
                              text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            return {"error": (proc.stderr or proc.stdout)[-1500:]}
        return json.loads(line[len("RESULT "):])

    for name in args.configs:
        tokens = CONFIGS[name]["batch"] * len(make_batch(name)["input_ids"][0])
        entry = {"tokens_per_step": tokens, "rounds": []}
        for r in range(args.rounds):
            backends = ("msmm", "torch_eager", "torch_compile") if r == 0 else ("msmm", "torch_eager")
            if args.compare_async:
                backends += ("msmm_async",)
            results_round = {backend: run(backend, name) for backend in backends}
            entry["rounds"].append(results_round)
            for backend, res in results_round.items():
                if "step_s" in res:
                    print(f"{name:6s} round {r} {backend:14s} {tokens / res['step_s']:9.1f} tokens/s  step {res['step_s'] * 1000:8.1f} ms  "
                          f"(CPU {res['cpu_s'] * 1000:8.1f} ms)  "
                          f"peak RSS {res['peak_rss_mb']:7.0f} MB  phases " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in res["phases_s"].items()),
                          flush=True)
                else:
                    print(f"{name:6s} round {r} {backend:14s} failed: {res['error'][-300:]}", flush=True)
        for backend in ("msmm", "torch_eager", "torch_compile", "msmm_async"):
            done = [rd[backend] for rd in entry["rounds"] if "step_s" in rd.get(backend, {})]
            if done:
                step_s = statistics.median(d["step_s"] for d in done)
                entry[backend] = {"step_s": step_s, "tokens_per_s": tokens / step_s,
                                  "cpu_s": statistics.median(d["cpu_s"] for d in done),
                                  "peak_rss_mb": max(d["peak_rss_mb"] for d in done),
                                  "phases_s": {k: statistics.median(d["phases_s"][k] for d in done) for k in done[0]["phases_s"]}}
        ratios = [rd["torch_eager"]["step_s"] / rd["msmm"]["step_s"] for rd in entry["rounds"]
                  if "step_s" in rd.get("msmm", {}) and "step_s" in rd.get("torch_eager", {})]
        if ratios:
            entry["msmm_over_torch_eager"] = statistics.median(ratios)
            entry["msmm_over_torch_eager_per_round"] = ratios
            entry["msmm_over_torch_eager_cpu_time"] = statistics.median(
                rd["torch_eager"]["cpu_s"] / rd["msmm"]["cpu_s"] for rd in entry["rounds"]
                if "cpu_s" in rd.get("msmm", {}) and "cpu_s" in rd.get("torch_eager", {}))
        async_ratios = [rd["msmm_async"]["step_s"] / rd["msmm"]["step_s"] for rd in entry["rounds"]
                        if "step_s" in rd.get("msmm", {}) and "step_s" in rd.get("msmm_async", {})]
        if async_ratios:
            entry["msmm_speedup_over_async_host_pipeline"] = statistics.median(async_ratios)
        if "msmm" in entry and "torch_compile" in entry:
            entry["msmm_over_torch_compile"] = entry["msmm"]["tokens_per_s"] / entry["torch_compile"]["tokens_per_s"]
        print(f"{name:6s} msmm / torch eager (median of {len(ratios)} rounds): wall {entry.get('msmm_over_torch_eager', float('nan')):.3f}, "
              f"CPU time {entry.get('msmm_over_torch_eager_cpu_time', float('nan')):.3f}", flush=True)
        results["configs"][name] = entry
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
