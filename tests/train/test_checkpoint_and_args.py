"""Checkpoint atomicity (a failure or a kill during a write leaves the previous checkpoint
loadable), the tracker file, LR schedules against Megatron's formulas written here, and
msmm-train argument errors."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from msmm.config.train_args import TrainArgsError, parse_train_args
from msmm.checkpoint import train_state as ckpt
from msmm.train.schedules import LRSchedule


def _state(iteration: int, value: float) -> ckpt.CheckpointState:
    return ckpt.CheckpointState(iteration, {"w": np.full((4, 4), value, np.float32)},
                                {"optimizer.step": np.array([iteration], np.int32)}, ckpt.capture_numpy_rng(),
                                ckpt.capture_python_rng(), {"epoch": 0, "batch_index": iteration})


def test_save_load_roundtrip_and_tracker(tmp_path):
    ckpt.save_checkpoint(str(tmp_path), _state(10, 1.0))
    ckpt.save_checkpoint(str(tmp_path), _state(20, 2.0))
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "20"
    assert sorted(os.listdir(tmp_path)) == ["iter_0000010", "iter_0000020", "latest_checkpointed_iteration.txt"]
    state = ckpt.load_checkpoint(str(tmp_path))
    assert state.iteration == 20 and state.data == {"epoch": 0, "batch_index": 20}
    np.testing.assert_array_equal(state.model["w"], 2.0)
    assert ckpt.load_checkpoint(str(tmp_path / "iter_0000010")).iteration == 10


def test_failure_inside_the_writer_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(str(tmp_path), _state(10, 1.0))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(str(tmp_path), _state(20, 2.0))
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "10"
    state = ckpt.load_checkpoint(str(tmp_path))
    assert state.iteration == 10 and float(state.model["w"][0, 0]) == 1.0


KILLED_WRITER = """
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
from msmm.checkpoint import train_state as ckpt
real = ckpt.save_file
def slow(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    print("written", flush=True)
    time.sleep(60)  # killed here: payload on disk, not yet renamed
ckpt.save_file = slow
ckpt.save_checkpoint({root!r}, ckpt.CheckpointState(20, {{"w": np.full((4, 4), 2.0, np.float32)}}))
"""


def test_kill_during_a_write_leaves_the_previous_checkpoint(tmp_path):
    ckpt.save_checkpoint(str(tmp_path), _state(10, 1.0))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(repo=repo, root=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.kill()
    proc.wait()
    assert any(name.startswith(".iter_0000020.tmp") for name in os.listdir(tmp_path))  # the half-written save
    assert not (tmp_path / "iter_0000020").exists()
    state = ckpt.load_checkpoint(str(tmp_path))
    assert state.iteration == 10 and float(state.model["w"][0, 0]) == 1.0


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no latest_checkpointed_iteration.txt"):
        ckpt.load_checkpoint(str(tmp_path))
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("30")
    with pytest.raises(FileNotFoundError, match="iteration 30"):
        ckpt.load_checkpoint(str(tmp_path))


def megatron(step, style, max_lr=1.0, min_lr=0.1, decay=100, warmup=10):
    if step <= warmup:
        return max_lr * step / warmup
    if style == "constant":
        return max_lr
    if step > decay:
        return min_lr
    r = (step - warmup) / (decay - warmup)
    return min_lr + (max_lr - min_lr) * ((1 - r) if style == "linear" else 0.5 * (1 + math.cos(math.pi * r)))


@pytest.mark.parametrize("style", ["constant", "linear", "cosine"])
def test_lr_schedules_follow_megatron(style):
    schedule = LRSchedule.from_fraction(1.0, 0.1, 100, 0.1, style)
    assert [schedule(s) for s in range(120)] == pytest.approx([megatron(s, style) for s in range(120)], abs=1e-12)


BASE = ["--mm-model", "m.json", "--mm-data", "d.json", "--micro-batch-size", "1", "--global-batch-size", "4",
        "--train-iters", "10", "--lr", "1e-5"]


@pytest.mark.parametrize("extra, message", [
    (["--bf16", "--fp16"], "--bf16 and --fp16 contradict"),
    (["--calculate-per-token-loss", "--calculate-per-sample-loss"], "mutually exclusive"),
    (["--lr-warmup-fractoin", "0.1"], "unknown argument --lr-warmup-fractoin (did you mean --lr-warmup-fraction?)"),
    (["--min-lr", "1e-3"], "--min-lr 0.001 is larger than --lr"),
    (["--global-batch-size", "3", "--micro-batch-size", "2"], "not a multiple of --micro-batch-size"),
    (["--save-interval", "5"], "--save-interval needs --save"),
    (["--tensor-model-parallel-size", "0"], "--tensor-model-parallel-size must be positive"),
    (["--context-parallel-size", "0"], "--context-parallel-size must be positive"),
    (["--lr-decay-style", "exponential"], "invalid choice"),
])
def test_bad_arguments_are_clear_errors(extra, message):
    with pytest.raises(TrainArgsError, match=None) as err:
        parse_train_args(BASE + extra)
    assert message in str(err.value)


def test_defaults_and_reductions():
    args = parse_train_args(BASE + ["--use-flash-attn"])
    assert args.loss_reduction == "micro_batch" and args.ignored == ["--use-flash-attn"]
    assert parse_train_args(BASE + ["--calculate-per-token-loss"]).loss_reduction == "token"
    assert parse_train_args(BASE + ["--calculate-per-sample-loss"]).loss_reduction == "sample"


def test_next_save_removes_what_an_interrupted_save_left(tmp_path):
    writer = subprocess.Popen(["true"])  # a writer that is gone (a live one's leftovers stay)
    writer.wait()
    (tmp_path / f".iter_0000020.tmp-{writer.pid}" / "mp_rank_00").mkdir(parents=True)
    ckpt.save_checkpoint(str(tmp_path), _state(30, 3.0))
    assert sorted(os.listdir(tmp_path)) == ["iter_0000030", "latest_checkpointed_iteration.txt"]


def test_adapter_layout_on_resume_of_a_checkpoint_without_lora(tmp_path):
    """Resuming a run that had no LoRA with --lora-* added: the InternVL adapter layout comes
    from the HF directory the first run loaded, or it is an error, never a silent 'hf'."""
    import json

    from msmm.models import load_model_config
    from msmm.train.cli import adapter_writer

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    config = load_model_config(os.path.join(root, "examples", "internvl2", "model_2B.json"))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "internvl_chat", "llm_config": {}}))
    writer = adapter_writer(None, config, None, {"load": str(remote)}, "save")
    assert (writer.naming.layout, writer.base_model_name_or_path) == ("remote", str(remote))
    writer = adapter_writer(None, config, None, {"lora_layout": "remote", "lora_base": "b"}, "save")
    assert (writer.naming.layout, writer.base_model_name_or_path) == ("remote", "b")
    for resumed in ({}, {"load": str(tmp_path / "gone")}):
        with pytest.raises(ValueError, match="--load save: this checkpoint was trained without LoRA"):
            adapter_writer(None, config, None, resumed, "save")
    assert adapter_writer(None, config, str(remote), None).naming.layout == "remote"
