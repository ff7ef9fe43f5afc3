"""LoRA vs full fine-tuning on msmm (MindSpore graph mode, CPU): trainable parameters, stored
bytes of the model and the optimizer state, peak RSS and step time, same InternVL model
(InternViT 4 layers + Qwen2 4 layers, hidden 256), same batch, fp32.

Runs: ``full`` (every parameter trains), ``lora`` (LoRA r=16 on every linear layer of the text
decoder and the ViT, projector in full: the XTuner recipe), ``qlora_int8`` / ``qlora_nf4`` (the
same with the frozen text and ViT weights stored int8 / NF4). Each run is its own process, so
its peak RSS (ru_maxrss) is its own; the RSS after building the model (before any graph is
compiled) is reported too, and the largest RSS sampled during the timed steps (after
compilation). 2 warm-up steps (compilation), then the median of 5 timed steps.

The peer, in the same run: the same architecture as HF ``InternVLForConditionalGeneration``
on torch eager (fp32, 2 threads) with ``torch.optim.AdamW``: ``torch_full`` and
``torch_peft_lora`` (HF PEFT ``LoraConfig`` r=16 on the same ViT and text linear layers,
projector in ``modules_to_save``).

    python benchmarks/lora.py            # writes benchmarks/results/lora.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP, STEPS = 2, 5
RUNS = ("full", "lora", "qlora_int8", "qlora_nf4", "torch_full", "torch_peft_lora")
VOCAB, IMAGE_TOKEN, TILE, BATCH, TEXT_TOKENS = 4096, 4095, 112, 2, 128
MODEL_JSON = {
    "model_id": "internvl", "image_token_id": IMAGE_TOKEN,
    "image_encoder": {
        "vision_encoder": {"model_id": "intern_vit", "num_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
                           "ffn_hidden_size": 1024, "image_size": TILE, "patch_size": 14},
        "vision_projector": {"model_id": "pixel_shuffle_mlp"},
    },
    "text_decoder": {"model_id": "qwen2", "num_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
                     "num_query_groups": 4, "ffn_hidden_size": 1024, "vocab_size": VOCAB, "add_qkv_bias": True},
}


def rss_mb() -> float:
    """Peak RSS of the process so far (ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class RSSSampler(threading.Thread):
    """Largest current RSS seen every 2 ms while running: the peak of the timed steps alone,
    after compilation (whose own peak ru_maxrss includes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, current_rss_mb())
            time.sleep(0.002)


def model_json(run: str) -> dict:
    config = json.loads(json.dumps(MODEL_JSON))
    if run != "full":
        quantize = {"qlora_int8": "int8", "qlora_nf4": "nf4"}.get(run)
        lora = {"r": 16, "lora_alpha": 32, "quantize": quantize}
        config["text_decoder"]["lora"] = dict(lora)
        config["image_encoder"]["vision_encoder"]["lora"] = dict(lora)
    return config


def batch():
    import numpy as np

    rng = np.random.default_rng(0)
    tokens = (TILE // 14 // 2) ** 2
    ids = np.array([[1, 2] + [IMAGE_TOKEN] * tokens + rng.integers(3, VOCAB - 1, TEXT_TOKENS).tolist()
                    for _ in range(BATCH)], np.int64)
    labels = np.where(ids == IMAGE_TOKEN, -100, ids)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels,
            "pixel_values": rng.standard_normal((BATCH, 3, TILE, TILE)).astype(np.float32)}


class Repeat:
    """The same micro-batch forever (a BatchSource)."""

    def __init__(self, b):
        self.b = b

    def __iter__(self):
        while True:
            yield self.b

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def timed_run(run: str, step, counts: dict) -> dict:
    """WARMUP + STEPS calls of ``step`` (returns the loss); the result record of one run.
    ``counts``: parameters, trainable_parameters, model_state_mb, optimizer_state_mb (a
    callable, read after the steps: torch creates its optimizer state lazily)."""
    built_rss = rss_mb()
    times, losses = [], []
    sampler = RSSSampler()
    for i in range(WARMUP + STEPS):
        if i == WARMUP:
            sampler.start()
        start = time.perf_counter()
        losses.append(step())
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    sampler.running = False
    return {"run": run, "parameters": counts["parameters"], "trainable_parameters": counts["trainable_parameters"],
            "model_state_mb": counts["model_state_mb"], "optimizer_state_mb": counts["optimizer_state_mb"](),
            "rss_after_build_mb": built_rss, "peak_rss_mb": rss_mb(), "steps_peak_rss_mb": sampler.peak,
            "step_s_median": statistics.median(times), "loss_first_last": [losses[0], losses[-1]]}


def worker(run: str) -> dict:
    os.environ.setdefault("GLOG_v", "3")
    from msmm import runtime

    runtime.start("CPU")  # before any MindSpore op and before msmm.models is imported
    import mindspore
    import numpy as np

    mindspore.set_seed(0)
    from msmm.models import apply_lora_config, build_model, parse_model_config
    from msmm.train.trainer import TrainConfig, Trainer

    config = parse_model_config(model_json(run), source=f"benchmark:{run}")
    model = build_model(config)
    apply_lora_config(model, config)
    trainer = Trainer(model, TrainConfig(train_iters=WARMUP + STEPS, global_batch_size=BATCH, micro_batch_size=BATCH,
                                         lr=1e-4, log_interval=10 ** 9), Repeat(batch()))
    state = model.state_dict()
    optimizer_bytes = sum(int(np.prod(v.shape)) * v.itemsize for v in trainer.optimizer.state_arrays(False).values())
    counts = {"parameters": sum(int(np.prod(p.shape)) for _, p in model.named_parameters()),
              "trainable_parameters": sum(int(np.prod(p.shape)) for _, p in trainer.named),
              "model_state_mb": sum(int(np.prod(t.shape)) * t.itemsize for t in state.values()) / 2 ** 20,
              "optimizer_state_mb": lambda: optimizer_bytes / 2 ** 20}
    return timed_run(run, lambda: trainer.train_step()["loss"], counts)


def torch_worker(run: str) -> dict:
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    torch.set_num_threads(2)
    torch.manual_seed(0)
    vit, text = MODEL_JSON["image_encoder"]["vision_encoder"], MODEL_JSON["text_decoder"]
    config = InternVLConfig(
        vision_config=dict(hidden_size=vit["hidden_size"], num_hidden_layers=vit["num_layers"],
                           num_attention_heads=vit["num_attention_heads"], intermediate_size=vit["ffn_hidden_size"],
                           image_size=[TILE, TILE], patch_size=[14, 14], norm_type="layer_norm", attention_bias=True),
        text_config=dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=text["hidden_size"],
                         intermediate_size=text["ffn_hidden_size"], num_hidden_layers=text["num_layers"],
                         num_attention_heads=text["num_attention_heads"], num_key_value_heads=text["num_query_groups"]),
        image_token_id=IMAGE_TOKEN, downsample_ratio=0.5, tie_word_embeddings=False, attn_implementation="eager")
    model = InternVLForConditionalGeneration(config).float().train()
    if run == "torch_peft_lora":
        from peft import LoraConfig, get_peft_model

        linear = "q_proj|k_proj|v_proj|o_proj|projection_layer|gate_proj|up_proj|down_proj|fc1|fc2"
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=rf".*(vision_tower|language_model)\..*\.({linear})",
                                                 modules_to_save=["multi_modal_projector"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    inputs = {k: torch.from_numpy(v) for k, v in batch().items()}

    def step() -> float:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    params = list(model.parameters())
    counts = {"parameters": sum(p.numel() for p in params), "trainable_parameters": sum(p.numel() for p in trainable),
              "model_state_mb": sum(p.numel() * p.element_size() for p in params) / 2 ** 20,
              "optimizer_state_mb": lambda: sum(v.numel() * v.element_size() for st in optimizer.state.values()
                                                for v in st.values() if torch.is_tensor(v) and v.dim() > 0) / 2 ** 20}
    return timed_run(run, step, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=RUNS)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "lora.json"))
    args = parser.parse_args()
    if args.worker:
        run = torch_worker if args.worker.startswith("torch") else worker
        print("RESULT " + json.dumps(run(args.worker)))
        return
    results = []
    for run in RUNS:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="2")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", run], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=1800)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"{run} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        results.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(results[-1]))
    by_run = {r["run"]: r for r in results}
    for r in results:
        full = by_run["torch_full" if r["run"].startswith("torch") else "full"]
        r["trainable_vs_full"] = r["trainable_parameters"] / full["trainable_parameters"]
        r["peak_rss_vs_full"] = r["peak_rss_mb"] / full["peak_rss_mb"]
        r["training_rss_mb"] = r["peak_rss_mb"] - r["rss_after_build_mb"]
    for ours, peer in (("full", "torch_full"), ("lora", "torch_peft_lora")):
        by_run[ours]["vs_torch"] = {"step_time": by_run[ours]["step_s_median"] / by_run[peer]["step_s_median"],
                                    "peak_rss": by_run[ours]["peak_rss_mb"] / by_run[peer]["peak_rss_mb"],
                                    "trainable_parameters": by_run[ours]["trainable_parameters"] / by_run[peer]["trainable_parameters"]}
    out = {"what": __doc__.splitlines()[0], "model": MODEL_JSON, "batch": {"micro_batch": BATCH, "tokens": TEXT_TOKENS + 2 + 16},
           "machine": "2-core CPU, MindSpore 2.10 graph mode, fp32", "results": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
