"""The tiny Qwen2-VL example end to end through msrun (1 worker): CLI, data.json,
model.json with a frozen vision encoder, logs, TensorBoard, loss curve, checkpoint layout;
then the same global batch on 2 msrun workers (data parallel, mccl) gives the same losses."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "examples", "qwen2vl", "finetune_qwen2vl_tiny_cpu.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_example(tmp, workers: int) -> str:
    save = os.path.join(tmp, f"save_{workers}")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", NPUS_PER_NODE=str(workers),
               MASTER_PORT=str(_free_port()), TINY_DIR=os.path.join(tmp, "assets"), SAVE_PATH=save, TRAIN_ITERS="6",
               GLOBAL_BATCH="4", EXTRA_ARGS="--calculate-per-token-loss")
    proc = subprocess.run(["bash", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(open(os.path.join(save, "msrun_log", f)).read()[-3000:]
                   for f in sorted(os.listdir(os.path.join(save, "msrun_log")))) if os.path.isdir(os.path.join(save, "msrun_log")) else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    return save


def records(save: str):
    with open(os.path.join(save, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("tiny"))
    return tmp, run_example(tmp, 1)


def test_tiny_example_runs_end_to_end(one_worker):
    _, save = one_worker
    log = records(save)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(r["tokens_per_s_per_device"] > 0 and r["peak_memory_mb"] > 0 for r in log)
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read() == "6"
    for it in (3, 6):
        shard = os.path.join(save, f"iter_{it:07d}", "mp_rank_00")
        meta = json.load(open(os.path.join(shard, "metadata.json")))
        assert meta["iteration"] == it and meta["has_optimizer"] and meta["has_rng"]
        assert meta["data"]["batch_index"] > 0
        model_json = json.load(open(os.path.join(os.path.dirname(save), "assets", "model.json")))
        assert meta["model_config"]["text_decoder"]["rotary_base"] == model_json["text_decoder"]["rotary_base"]
    tensors = load_file(os.path.join(save, "iter_0000006", "mp_rank_00", "model_optim_rng.safetensors"))
    early = load_file(os.path.join(save, "iter_0000003", "mp_rank_00", "model_optim_rng.safetensors"))
    vision = [k for k in tensors if k.startswith("model.visual.blocks.")]
    assert vision and all(np.array_equal(tensors[k], early[k]) for k in vision)  # frozen in model.json
    assert not any(k.startswith("optimizer.exp_avg.visual.blocks.") for k in tensors)
    assert not np.array_equal(tensors["model.lm_head.weight"], early["model.lm_head.weight"])
    assert os.path.getsize(os.path.join(save, "loss_curve.png")) > 1000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(save, "tensorboard")))


def test_two_workers_match_one_worker(one_worker):
    tmp, save1 = one_worker
    save2 = run_example(tmp, 2)
    one, two = records(save1), records(save2)
    print("\nDP losses 1 worker:", [r["loss"] for r in one], "\n            2 workers:", [r["loss"] for r in two])
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in two], [r["grad_norm"] for r in one], rtol=1e-5)
