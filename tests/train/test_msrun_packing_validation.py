"""The tiny launch scripts through msrun (1 worker) with data.json ``packing`` on and a
``val_rate`` validation split: packed micro-batches train (Qwen2-VL's M-RoPE positions restart
per packed sample in the trainer's InputBuilder), and ``--eval-interval`` / ``--eval-iters``
log the validation loss on the console, in validation_log.jsonl and TensorBoard."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_msrun import REPO, _free_port, records

SCRIPTS = {"qwen2vl": "examples/qwen2vl/finetune_qwen2vl_tiny_cpu.sh",
           "internvl": "examples/internvl/finetune_internvl_tiny_cpu.sh",
           "llava": "examples/llava/pretrain_llava_tiny_cpu.sh"}


def run_script(family: str, tmp_path, workers: int = 1, extra: str = "") -> tuple:
    """(save dir, assets dir, console output) of the tiny script, packed, with a 25% validation split."""
    save, assets = str(tmp_path / f"save_{workers}"), str(tmp_path / "assets")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", NPUS_PER_NODE=str(workers),
               MASTER_PORT=str(_free_port()), TINY_DIR=assets, SAVE_PATH=save, TRAIN_ITERS="6", GLOBAL_BATCH="4",
               ASSET_ARGS="--packing --val-rate 0.25", EXTRA_ARGS=f"--eval-interval 3 --eval-iters 1 {extra}")
    proc = subprocess.run(["bash", os.path.join(REPO, SCRIPTS[family])], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save, assets, proc.stdout


def validation_records(save: str) -> list:
    with open(os.path.join(save, "validation_log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SCRIPTS))
def test_tiny_script_trains_packed_and_validates(family, tmp_path):
    save, assets, stdout = run_script(family, tmp_path)
    with open(os.path.join(assets, "data.json")) as f:
        data = json.load(f)
    assert data["dataloader_param"]["packing"] and data["dataset_param"]["basic_parameters"]["val_rate"] == 0.25
    log = records(save)
    print(f"\n{family} packed losses:", [round(r["loss"], 4) for r in log])
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"]
    validation = validation_records(save)
    print(f"{family} validation losses:", [round(r["validation_loss"], 4) for r in validation])
    assert [r["iteration"] for r in validation] == [3, 6, 6]
    assert all(np.isfinite(r["validation_loss"]) for r in validation)
    assert "validation loss at iteration 3 | lm loss value:" in stdout
    assert "validation loss at iteration 6 on validation set | lm loss value:" in stdout


@pytest.mark.slow
def test_two_data_parallel_workers_equal_one(tmp_path):
    """Packed training and validation over 2 msrun workers (each its share of every global
    batch, the validation sums over both) equal 1 worker, per-token loss."""
    one, _, _ = run_script("qwen2vl", tmp_path, 1, "--calculate-per-token-loss")
    two, _, _ = run_script("qwen2vl", tmp_path, 2, "--calculate-per-token-loss")
    np.testing.assert_allclose([r["loss"] for r in records(two)], [r["loss"] for r in records(one)], rtol=1e-5)
    got, expected = ([r["validation_loss"] for r in validation_records(s)] for s in (two, one))
    print("validation, 1 worker:", expected, "2 workers:", got)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
