"""Training-step throughput: msmm (MindSpore graph mode) vs HF transformers on torch eager and
torch.compile, same Qwen2-VL configs, same batch, fp32; at 1 thread pinned to one core and at
2 threads.

One full step = forward + backward + gradient clipping + AdamW update (msmm: ``Trainer.train_step``,
what a training run executes). Every backend runs in its own fresh process: a torch worker never
imports MindSpore (checked at its end), so neither MindSpore's start-up nor its thread pools
touch torch (on some CPUs they slow torch down by up to 80x: docs/performance.md, "Measuring").
``msmm_one_graph`` is msmm with ``MSMM_ONE_GRAPH_STEP=1`` (the whole step one compiled graph).
Per process: 3 warm-up steps (compilation), then the median of 10 timed steps, wall and CPU
time (``time.process_time``, all threads), peak RSS, and for msmm the resident memory at each
stage of start-up. The machine is shared, so msmm and torch eager alternate for ``--rounds``
rounds; the reported ratio is the median of the per-round ratios (torch.compile runs in the
first round only).

Sanity check: a plain HF ``Qwen2ForCausalLM`` step (hidden 64, 2 layers, 2 x 128 tokens, AdamW)
runs in a fresh process each round, and again inside each torch eager worker after its timed
steps; if the in-worker run, or torch eager's tiny step (of about the same size), takes more
than 2x the fresh one, the torch baseline is not trustworthy on this machine and the results
say so (``torch_baseline_suspect``; ``check_sanity`` says why steps, not tokens, are compared).

    python benchmarks/train_step.py                      # writes benchmarks/train_step.json
    python benchmarks/train_step.py --count-kernels      # kernels per decoder layer, fused kernels off / on
    python benchmarks/train_step.py --same-process       # torch's step after a MindSpore op, flush-denormal
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env import affinity, machine  # noqa: E402  (reads /proc only)

WARMUP, STEPS = 3, 10
THREAD_MODES = ("1pinned", "2")
CONFIGS = {
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2), vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4),
                 batch=2, text_tokens=48, grid=(1, 8, 8)),
    "small": dict(text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=4), vision=dict(depth=4, embed_dim=256, hidden_size=256, num_heads=8),
                  batch=2, text_tokens=192, grid=(1, 16, 16)),
}
# the sanity step: plain HF Qwen2, hidden 64, 2 layers, 2 x 128 tokens, AdamW
SANITY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, batch=2, tokens=128)
BACKENDS = ("msmm", "msmm_one_graph", "torch_eager", "torch_compile")
BACKEND_ENV = {"msmm_one_graph": {"MSMM_ONE_GRAPH_STEP": "1"}}  # the whole step as one compiled graph
PIN_ENV = "MSMM_BENCH_PIN_CORE"  # a worker pins itself to this core first
SANITY_LIMIT = 2.0  # torch eager may be at most this much slower per token than the sanity step
VOCAB, VISION_START, VISION_END, IMAGE = 1024, 1000, 1001, 1002


def hf_config(name: str, text_layers: Optional[int] = None) -> dict:
    c = CONFIGS[name]
    head = c["text"]["hidden_size"] // c["text"]["num_attention_heads"]
    text = dict(vocab_size=VOCAB, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
                rope_scaling={"type": "mrope", "mrope_section": [head // 8, 3 * head // 16, 3 * head // 16]},
                tie_word_embeddings=False, **c["text"])
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
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


def tokens_per_step(name: str) -> int:
    return int(make_batch(name)["input_ids"].size)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(step, warmup: int = WARMUP, steps: int = STEPS) -> Dict[str, float]:
    """Median wall and CPU seconds of ``step()`` after ``warmup`` calls."""
    wall, cpu = [], []
    for i in range(warmup + steps):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        step()
        if i >= warmup:
            wall.append(time.perf_counter() - wall0)
            cpu.append(time.process_time() - cpu0)
    return {"step_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


# ---- workers (each in its own process) ---------------------------------------------------------

def run_torch(name: str, threads: int, compiled: bool) -> dict:
    memory = {"python": rss_mb()}  # the same stages as msmm's (build_msmm_trainer)
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    memory["torch_transformers_imported"] = rss_mb()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = hf_config(name)
    cfg.pop("model_type")
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**cfg, attn_implementation="sdpa")).float().train()
    batch = {k: torch.tensor(v) for k, v in make_batch(name).items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    memory["model_built"] = rss_mb()

    def fwd_bwd():
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss

    fb = torch.compile(fwd_bwd) if compiled else fwd_bwd

    def step():
        opt.zero_grad()
        fb()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    result = {**timed(step), "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads()}
    memory["after_timed_steps"] = rss_mb()
    result["rss_mb"] = memory
    if not compiled:  # the sanity step in this process too: equal to a fresh process's if torch is healthy here
        result["sanity_in_process"] = run_sanity(threads)
    return result


def run_sanity(threads: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SANITY
    config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=512, hidden_size=s["hidden_size"],
                         intermediate_size=s["intermediate_size"], num_hidden_layers=s["num_hidden_layers"],
                         num_attention_heads=s["num_attention_heads"], num_key_value_heads=s["num_key_value_heads"],
                         attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config).train()
    ids = torch.randint(0, VOCAB, (s["batch"], s["tokens"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    def step():
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return {**timed(step, 3, 20), "tokens_per_step": s["batch"] * s["tokens"], "peak_rss_mb": peak_rss_mb()}


class SameBatch:
    """A data iterator that yields one batch forever (the trainer's data interface: iteration and
    a resumable state, here none)."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build_msmm_trainer(name: str, threads: int, text_layers: Optional[int] = None):
    """(trainer, memory stages): an msmm Trainer over the config, fed the same batch forever."""
    sys.path.insert(0, REPO)
    memory = {"python": rss_mb()}
    from msmm import runtime

    runtime.start("CPU")
    import mindspore

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE, runtime_num_threads=threads)
    memory["mindspore_started"] = rss_mb()
    breakdown = {"mindspore_started": runtime.memory_breakdown()}
    from msmm.models.qwen2_vl import Qwen2VL, Qwen2VLConfig
    from msmm.train.trainer import TrainConfig, Trainer

    mindspore.set_seed(0)
    model = Qwen2VL(Qwen2VLConfig.from_hf(hf_config(name, text_layers)))
    memory["model_built"] = rss_mb()
    breakdown["model_built"] = runtime.memory_breakdown()
    batch = make_batch(name)

    size = CONFIGS[name]["batch"]
    config = TrainConfig(train_iters=10**6, global_batch_size=size, micro_batch_size=size, lr=1e-5, log_interval=10**9)
    trainer = Trainer(model, config, SameBatch(batch))
    memory["trainer_built"] = rss_mb()
    breakdown["trainer_built"] = runtime.memory_breakdown()
    memory["breakdown"] = breakdown  # MB by kind per stage: runtime.memory_breakdown()
    return trainer, memory


def run_msmm(name: str, threads: int) -> dict:
    trainer, memory = build_msmm_trainer(name, threads)
    from msmm import runtime

    start = time.perf_counter()
    trainer.train_step()
    first = time.perf_counter() - start
    memory["after_step_1"] = rss_mb()  # after the trainer's malloc_trim (runtime.release_free_heap)
    memory["breakdown"]["after_step_1"] = runtime.memory_breakdown()
    result = timed(trainer.train_step, WARMUP - 1)
    memory["after_timed_steps"] = rss_mb()
    return {**result, "first_step_s": first, "peak_rss_mb": peak_rss_mb(), "rss_mb": memory,
            "compiled_callables": len(runtime._compiled) // 2, "host_pipeline_threads": runtime.async_queue_threads()}


KERNEL_LINE = re.compile(r"^%\d+ = kernel_graph\d+:([A-Za-z0-9_]+)-op\d+\(")


def count_graph_kernels(path: str) -> Dict[str, int]:
    """Kernels launched by one compiled graph (the kernel actors of its final actor set), by op."""
    counts: Dict[str, int] = {}
    with open(path) as f:
        for line in f:
            match = KERNEL_LINE.match(line)
            if match:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def run_count(name: str, text_layers: int) -> dict:
    """One training step with MindSpore's IR dump on: the kernels of every compiled graph, in
    compilation order."""
    directory = os.environ["MS_DEV_SAVE_GRAPHS_PATH"]
    trainer, _ = build_msmm_trainer(name, 1, text_layers)
    trainer.train_step()
    paths = glob.glob(os.path.join(directory, "**", "final_actor_set_kernel_graph_*.ir"), recursive=True)
    paths.sort(key=lambda p: int(re.search(r"(\d+)\.ir$", p).group(1)))
    return {"graphs": [count_graph_kernels(p) for p in paths]}


def run_same_process(condition: str, threads: int) -> dict:
    """The sanity step in a process where, before it, ``condition`` happened: nothing, torch's
    flush-denormal mode, or a MindSpore op (then also with flush-denormal switched off again)."""
    import torch

    if condition == "flush_denormal":
        torch.set_flush_denormal(True)
    elif condition.startswith("mindspore_op"):
        os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")
        import mindspore
        import numpy as np

        mindspore.set_device("CPU")
        mindspore.set_context(runtime_num_threads=threads)
        (mindspore.Tensor(np.ones((64, 64), np.float32)) @ mindspore.Tensor(np.ones((64, 64), np.float32))).asnumpy()
        if condition == "mindspore_op_then_no_flush_denormal":
            torch.set_flush_denormal(False)
    return run_sanity(threads)


def worker(args: List[str]) -> dict:
    kind, threads = args[0], int(args[-1])
    if kind.startswith("msmm"):
        return run_msmm(args[1], threads)
    if kind == "count":
        return run_count(args[1], int(args[2]))
    if kind == "same_process":
        return run_same_process(args[1], threads)
    if kind == "sanity":
        result = run_sanity(threads)
    else:
        result = run_torch(args[1], threads, kind == "torch_compile")
    assert "mindspore" not in sys.modules, "a torch peer imported MindSpore: it is not a peer any more"
    return result


# ---- the parent ---------------------------------------------------------------------------------

def spawn(args: List[str], mode: str, extra_env: Optional[Dict[str, str]] = None) -> dict:
    """Run a worker in a fresh process with ``mode``'s threads ("1pinned": one thread on one core)."""
    threads = 1 if mode == "1pinned" else int(mode)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOG_v="3", PYTHONPATH=REPO, **(extra_env or {}))
    if mode == "1pinned":
        env[PIN_ENV] = str(affinity()[-1])
    env.update(BACKEND_ENV.get(args[0], {}))
    command = [sys.executable, os.path.abspath(__file__), "--worker", *args, str(threads)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(line[len("RESULT "):])


def show(label: str, res: dict, tokens: int) -> None:
    if "step_s" not in res:
        print(f"{label:38s} failed: {res['error'][-400:]}", flush=True)
        return
    print(f"{label:38s} {tokens / res['step_s']:9.1f} tok/s  step {res['step_s'] * 1e3:8.1f} ms  "
          f"CPU {res['cpu_s'] * 1e3:8.1f} ms  peak RSS {res['peak_rss_mb']:6.0f} MB", flush=True)


def median_of(rounds: List[dict], backend: str) -> Optional[dict]:
    done = [r[backend] for r in rounds if "step_s" in r.get(backend, {})]
    if not done:
        return None
    return {"step_s": statistics.median(d["step_s"] for d in done), "cpu_s": statistics.median(d["cpu_s"] for d in done),
            "peak_rss_mb": max(d["peak_rss_mb"] for d in done)}


def ratio(rounds: List[dict], num: str, den: str, key: str) -> Optional[float]:
    """Median over rounds of den[key] / num[key]: > 1 means ``num`` is faster."""
    values = [r[den][key] / r[num][key] for r in rounds if key in r.get(num, {}) and key in r.get(den, {})]
    return statistics.median(values) if values else None


def benchmark(args) -> dict:
    results = {"machine": machine(), "dtype": "float32", "warmup_steps": WARMUP, "timed_steps": STEPS,
               "rounds": args.rounds, "runs": {}, "sanity_limit": SANITY_LIMIT}
    sanity_tokens = SANITY["batch"] * SANITY["tokens"]
    for mode in args.threads:
        for name in args.configs:
            tokens = tokens_per_step(name)
            rounds = []
            for r in range(args.rounds):
                backends = [b for b in args.backends if b != "torch_compile" or r == 0]
                res = {b: spawn([b, name], mode) for b in backends}
                res["sanity"] = spawn(["sanity"], mode)
                rounds.append(res)
                for b in res:
                    show(f"{name} @ {mode} round {r} {b}", res[b], sanity_tokens if b == "sanity" else tokens)
            entry = {"tokens_per_step": tokens, "rounds": rounds}
            for b in (*args.backends, "sanity"):
                entry[b] = median_of(rounds, b)
            for ours, peer in (("msmm", "torch_eager"), ("msmm", "torch_compile"), ("msmm_one_graph", "torch_eager"),
                               ("msmm_one_graph", "msmm")):
                entry[f"{ours}_over_{peer}"] = ratio(rounds, ours, peer, "step_s")
                entry[f"{ours}_over_{peer}_cpu_time"] = ratio(rounds, ours, peer, "cpu_s")
            if entry.get("msmm") and entry.get("torch_eager"):
                entry["msmm_over_torch_eager_peak_rss"] = entry["msmm"]["peak_rss_mb"] / entry["torch_eager"]["peak_rss_mb"]
            if entry.get("torch_eager") and entry.get("sanity"):
                check_sanity(entry, name, mode, tokens)
            results["runs"][f"{name}@{mode}"] = entry
            print(f"{name} @ {mode}: msmm / torch eager (median of rounds) wall "
                  f"{entry['msmm_over_torch_eager'] or float('nan'):.3f}, CPU {entry['msmm_over_torch_eager_cpu_time'] or float('nan'):.3f}"
                  f"; torch eager / plain HF step {entry.get('torch_eager_over_sanity_step', float('nan')):.2f}",
                  flush=True)
    table(results)
    return results


def check_sanity(entry: dict, name: str, mode: str, tokens: int) -> None:
    """Flag the torch baseline when the plain HF step run inside the torch eager worker, or (for
    tiny, of about its size) torch eager's own step, is over SANITY_LIMIT x the plain step in a
    fresh process. Per token, tiny's step (132 tokens + 128 patches) costs ~3x the plain step's
    (256 tokens) in a healthy process: at this size a step's cost is per op, not per token, so
    the per-token ratio is recorded but the flag uses whole steps."""
    fresh = entry["sanity"]["step_s"]
    in_process = statistics.median(r["torch_eager"]["sanity_in_process"]["step_s"] for r in entry["rounds"]
                                   if "sanity_in_process" in r.get("torch_eager", {}))
    entry["sanity_in_torch_worker_over_fresh"] = in_process / fresh
    entry["torch_eager_over_sanity_step"] = entry["torch_eager"]["step_s"] / fresh
    entry["torch_eager_over_sanity_per_token"] = (entry["torch_eager"]["step_s"] / tokens) / (
        fresh / (SANITY["batch"] * SANITY["tokens"]))
    suspect = [f"the plain HF step inside the torch eager worker takes {in_process / fresh:.1f}x its time in a "
               "fresh process"] if in_process > SANITY_LIMIT * fresh else []
    if name == "tiny" and entry["torch_eager_over_sanity_step"] > SANITY_LIMIT:
        suspect.append(f"torch eager's tiny step takes {entry['torch_eager_over_sanity_step']:.1f}x a plain HF "
                       "step of about its size in a fresh process")
    entry["torch_baseline_suspect"] = bool(suspect)
    for what in suspect:
        print(f"WARNING {name} @ {mode}: {what} (limit {SANITY_LIMIT}x): the torch baseline is not trustworthy "
              "on this machine", flush=True)


def table(results: dict) -> None:
    print("\n| config | threads | msmm ms | one-graph ms | torch eager ms | torch.compile ms | msmm / eager (wall) | "
          "(CPU) | RSS msmm / eager MB | eager / plain HF step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, e in results["runs"].items():
        name, mode = key.split("@")

        def ms(b):
            return f"{e[b]['step_s'] * 1e3:.1f}" if e.get(b) else "-"

        def num(v, fmt=".2f"):
            return format(v, fmt) if v is not None else "-"

        rss = (f"{e['msmm']['peak_rss_mb']:.0f} / {e['torch_eager']['peak_rss_mb']:.0f}"
               if e.get("msmm") and e.get("torch_eager") else "-")
        print(f"| {name} | {mode} | {ms('msmm')} | {ms('msmm_one_graph')} | {ms('torch_eager')} | {ms('torch_compile')} | "
              f"{num(e.get('msmm_over_torch_eager'))} | {num(e.get('msmm_over_torch_eager_cpu_time'))} | {rss} | "
              f"{num(e.get('torch_eager_over_sanity_step'))} |")


def count_kernels(args) -> dict:
    """Kernels per training step for the tiny config with 2 and 3 text decoder layers, fused
    kernels off and on; the difference is one decoder layer's (forward, backward, optimizer)."""
    out = {}
    for fused in ("0", "1"):
        graphs = {}
        for layers in (2, 3):
            with tempfile.TemporaryDirectory() as directory:
                res = spawn(["count", "tiny", str(layers)], "1pinned",
                            {"MSMM_FUSED_KERNELS": fused, "MS_DEV_SAVE_GRAPHS": "1", "MS_DEV_SAVE_GRAPHS_PATH": directory})
            if "error" in res:
                print(f"MSMM_FUSED_KERNELS={fused}, {layers} layers: failed: {res['error'][-400:]}")
                break
            graphs[layers] = res["graphs"]
        if len(graphs) < 2 or len(graphs[2]) != len(graphs[3]):
            continue
        per_graph = []
        for two, three in zip(graphs[2], graphs[3]):
            diff = {op: three.get(op, 0) - two.get(op, 0) for op in sorted(set(two) | set(three))}
            per_graph.append({"kernels_2_layers": sum(two.values()), "per_decoder_layer": sum(diff.values()),
                              "per_decoder_layer_by_op": {op: n for op, n in diff.items() if n}})
        entry = {"graphs_per_step": len(per_graph),
                 "kernels_per_step_2_layers": sum(g["kernels_2_layers"] for g in per_graph),
                 "kernels_per_decoder_layer": sum(g["per_decoder_layer"] for g in per_graph), "graphs": per_graph}
        out[f"fused_kernels_{fused}"] = entry
        print(f"MSMM_FUSED_KERNELS={fused}: {entry['graphs_per_step']} graphs, {entry['kernels_per_step_2_layers']} "
              f"kernels per tiny step, {entry['kernels_per_decoder_layer']} per decoder layer", flush=True)
        for k, g in enumerate(per_graph):
            ops = sorted(g["per_decoder_layer_by_op"].items(), key=lambda kv: -kv[1])
            print(f"  graph {k}: {g['kernels_2_layers']} kernels, {g['per_decoder_layer']} per layer: "
                  + ", ".join(f"{op} {n}" for op, n in ops), flush=True)
    return out


SAME_PROCESS_CONDITIONS = ("clean", "flush_denormal", "mindspore_op", "mindspore_op_then_no_flush_denormal")


def same_process(args) -> dict:
    """The plain HF step (the sanity step) in fresh processes, after each condition, alternating."""
    out = {}
    for mode in args.threads:
        rounds = [{c: spawn(["same_process", c], mode) for c in SAME_PROCESS_CONDITIONS} for _ in range(args.rounds)]
        entry = {c: median_of(rounds, c) for c in SAME_PROCESS_CONDITIONS}
        entry["rounds"] = rounds
        out[mode] = entry
        for c in SAME_PROCESS_CONDITIONS:
            if entry[c]:
                print(f"{mode:8s} {c:40s} step {entry[c]['step_s'] * 1e3:7.2f} ms  CPU {entry[c]['cpu_s'] * 1e3:7.2f} ms  "
                      f"x{entry[c]['step_s'] / entry['clean']['step_s']:.2f} of clean", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", nargs="+", default=list(THREAD_MODES), choices=list(THREAD_MODES))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count-kernels", action="store_true", help="kernels per decoder layer, MSMM_FUSED_KERNELS=0 and 1")
    parser.add_argument("--same-process", action="store_true",
                        help="torch's step after a MindSpore op in the same process, and with flush-denormal")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "train_step.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if PIN_ENV in os.environ:  # before torch or MindSpore start their threads
            os.sched_setaffinity(0, {int(os.environ[PIN_ENV])})
        print("RESULT " + json.dumps({**worker(args.worker), "affinity": affinity()}), flush=True)
        return
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    if args.count_kernels:
        results["kernels"] = {"machine": machine(), **count_kernels(args)}
    elif args.same_process:
        results["same_process"] = {"machine": machine(), **same_process(args)}
    else:
        kept = {k: results[k] for k in ("kernels", "same_process") if k in results}
        results = {**benchmark(args), **kept}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
