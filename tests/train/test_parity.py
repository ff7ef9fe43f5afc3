"""Loss-curve parity: 20 steps of fine-tuning tiny Qwen2-VL and tiny InternVL (HF-native,
Qwen2 text) with msmm's trainer (MindSpore graph mode) against an HF transformers + torch
loop written here (torch.optim.AdamW, LambdaLR, clip_grad_norm_): same initial weights,
same micro-batches in the same order, 2 micro-batches of 2 per step, warmup + cosine decay,
clipping active. Also freezing (InternVL's vision tower) and exact resume (Qwen2-VL)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tiny_models import hf_model, make_batches, ours

HERE = os.path.dirname(os.path.abspath(__file__))
ITERS, GBS, MBS = 20, 4, 2
CONFIG = dict(train_iters=ITERS, global_batch_size=GBS, micro_batch_size=MBS, lr=1e-3, min_lr=1e-4,
              lr_warmup_fraction=0.1, lr_decay_style="cosine", weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
              adam_eps=1e-8, clip_grad=1.0)
FREEZE = {"qwen2_vl": [], "internvl": ["vision_tower."]}
LOSS_RTOL, WEIGHT_ATOL = 1e-3, 1e-4


def megatron_lr(step: int) -> float:
    """Megatron's warmup + cosine, written independently of msmm.train.schedules."""
    warmup = int(CONFIG["lr_warmup_fraction"] * ITERS)
    lr, min_lr = CONFIG["lr"], CONFIG["min_lr"]
    if step <= warmup:
        return lr * step / warmup
    ratio = (step - warmup) / (ITERS - warmup)
    return min_lr + 0.5 * (math.cos(math.pi * ratio) + 1.0) * (lr - min_lr)


def torch_train(model, family, batches):
    frozen = FREEZE[family]
    named = []
    for name, p in model.named_parameters():
        p.requires_grad = not any(ours(family, name).startswith(f) for f in frozen)
        if p.requires_grad:
            named.append((name, p))
    groups = [
        {"params": [p for n, p in named if not (n.endswith(".bias") or p.ndim == 1)], "weight_decay": CONFIG["weight_decay"]},
        {"params": [p for n, p in named if n.endswith(".bias") or p.ndim == 1], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=CONFIG["lr"], betas=(CONFIG["adam_beta1"], CONFIG["adam_beta2"]), eps=CONFIG["adam_eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: megatron_lr(s) / CONFIG["lr"])
    micro = GBS // MBS
    losses, norms = [], []
    for step in range(ITERS):
        opt.zero_grad()
        total = 0.0
        for batch in batches[step * micro:(step + 1) * micro]:
            out = model(**{k: torch.tensor(v) for k, v in batch.items()})
            (out.loss / micro).backward()
            total += float(out.loss.detach()) / micro
        norms.append(float(torch.nn.utils.clip_grad_norm_([p for _, p in named], CONFIG["clip_grad"])))
        opt.step()
        sched.step()
        losses.append(total)
    return losses, norms, {ours(family, n): p.detach().numpy().copy() for n, p in model.named_parameters()}


def run_worker(spec: dict, directory: str) -> dict:
    path = os.path.join(directory, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "ms_worker.py"), path], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(os.path.join(spec["out"], "result.json")) as f:
        result = json.load(f)
    result["weights"] = load_file(os.path.join(spec["out"], "final.safetensors"))
    result["stdout"] = proc.stdout
    return result


@pytest.fixture(scope="module", params=["qwen2_vl", "internvl"])
def runs(request, tmp_path_factory):
    family = request.param
    tmp = str(tmp_path_factory.mktemp(family))
    model = hf_model(family)
    checkpoint = os.path.join(tmp, "hf")
    model.save_pretrained(checkpoint, safe_serialization=True)
    initial = {ours(family, n): p.detach().numpy().copy() for n, p in model.named_parameters()}
    batches = make_batches(family, ITERS * GBS // MBS)
    np.savez(os.path.join(tmp, "batches.npz"), **{f"b{i}_{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    ref_losses, ref_norms, ref_weights = torch_train(model, family, batches)
    spec = dict(family=family, checkpoint=checkpoint, batches=os.path.join(tmp, "batches.npz"), freeze=FREEZE[family],
                config=dict(CONFIG, save=os.path.join(tmp, "save"), save_interval=10), out=os.path.join(tmp, "out"))
    result = run_worker(spec, tmp)
    return dict(family=family, tmp=tmp, spec=spec, initial=initial, ref_losses=ref_losses, ref_norms=ref_norms,
                ref_weights=ref_weights, result=result)


def test_loss_curve_and_final_weights_match_torch(runs):
    history = runs["result"]["history"]
    losses = np.array([r["loss"] for r in history])
    ref = np.array(runs["ref_losses"])
    rel = np.abs(losses - ref) / np.abs(ref)
    norm_rel = np.abs(np.array([r["grad_norm"] for r in history]) - runs["ref_norms"]) / np.array(runs["ref_norms"])
    weights, ref_weights = runs["result"]["weights"], runs["ref_weights"]
    assert set(weights) == set(ref_weights)
    weight_err = max(float(np.abs(weights[k] - ref_weights[k]).max()) for k in ref_weights)
    print(f"\n{runs['family']}: loss {ref[0]:.4f} -> {ref[-1]:.4f}, max loss rel err {rel.max():.2e}, "
          f"max grad-norm rel err {norm_rel.max():.2e}, final weights max abs err {weight_err:.2e}")
    assert ref[-1] < ref[0] - 0.05, "the reference did not learn; the comparison would be weak"
    assert np.array(runs["ref_norms"]).max() > CONFIG["clip_grad"], "clipping never triggered"
    assert rel.max() <= LOSS_RTOL, rel
    assert [r["lr"] for r in history] == pytest.approx([megatron_lr(s) for s in range(ITERS)], rel=1e-12)
    assert weight_err <= WEIGHT_ATOL


def test_frozen_parameters_get_no_gradient_and_stay_unchanged(runs):
    frozen = [n for n in runs["initial"] if any(n.startswith(f) for f in FREEZE[runs["family"]])]
    trainable = set(runs["result"]["trainable"])
    assert trainable == set(runs["initial"]) - set(frozen)
    for name in frozen:
        np.testing.assert_array_equal(runs["result"]["weights"][name], runs["initial"][name], err_msg=name)
    changed = [n for n in trainable if not np.array_equal(runs["result"]["weights"][n], runs["initial"][n])]
    assert len(changed) == len(trainable)


def test_resume_from_step_10_equals_uninterrupted_run(runs):
    tmp = runs["tmp"]
    stopped = os.path.join(tmp, "stopped")  # what a run stopped after step 10 leaves behind
    shutil.copytree(os.path.join(runs["spec"]["config"]["save"], "iter_0000010"), os.path.join(stopped, "iter_0000010"))
    with open(os.path.join(stopped, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("10")
    spec = dict(runs["spec"], load=stopped, out=os.path.join(tmp, "resumed"), config=dict(CONFIG))
    resumed = run_worker(spec, tmp)
    assert resumed["start_iteration"] == 10 and len(resumed["history"]) == 10
    full = runs["result"]["history"][10:]
    got = np.array([r["loss"] for r in resumed["history"]])
    want = np.array([r["loss"] for r in full])
    print(f"\n{runs['family']} resume: steps 11..20 max loss rel err {np.max(np.abs(got - want) / want):.2e}")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose([r["grad_norm"] for r in resumed["history"]], [r["grad_norm"] for r in full], rtol=1e-6)
    assert resumed["data"] == runs["result"]["data"]  # same data position at the end
    for name, value in runs["result"]["weights"].items():
        np.testing.assert_allclose(resumed["weights"][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
