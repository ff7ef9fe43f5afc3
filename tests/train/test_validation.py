"""Validation loss (``--eval-interval``, ``--eval-iters``; ``msmm.train.evaluation``): on
MindSpore in the trainer, it equals an HF eval loop over the same validation micro-batches with
the weights of the same iteration; it is logged as Megatron prints it, to validation_log.jsonl
and TensorBoard; the flags are honoured, logged as without effect (no validation data) or
refused (pipeline stages), never ignored."""
from __future__ import annotations

import json
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from msmm.checkpoint import train_state as ckpt
from msmm.config.data_config import parse_data_config
from msmm.config.launch_flags import NO_EFFECT
from msmm.config.train_args import TrainArgsError, parse_train_args
from msmm.train.evaluation import PIPELINE_REFUSAL, Evaluator, evaluator_from_args
from test_parity import run_worker
from tiny_models import hf_model, make_batches, ours

ARGS = ["--mm-model", "m.json", "--mm-data", "d.json", "--micro-batch-size", "1", "--global-batch-size", "2",
        "--train-iters", "4", "--lr", "1e-3"]
DATA = {"dataset_param": {"basic_parameters": {"template_name": "internvl2_5", "data_path": "train.jsonl"},
                          "tokenizer_config": {"from_pretrained": "tok"}}}


def hf_eval_loss(model, save: str, iteration: int, batches) -> float:
    """Megatron's evaluate on the HF model with the weights msmm saved at ``iteration``: the
    mean over the micro-batches of each one's token-mean loss (the default reduction)."""
    weights = ckpt.load_checkpoint(os.path.join(save, f"iter_{iteration:07d}")).model
    model.load_state_dict({n: torch.tensor(weights[ours("internvl", n)]) for n, _ in model.named_parameters()},
                          strict=False)
    model.eval()
    with torch.no_grad():
        losses = [float(model(**{k: torch.tensor(v) for k, v in b.items()}).loss) for b in batches]
    return sum(losses) / len(losses)


class ListSource:
    """Fixed micro-batches, one epoch per pass, with a saveable position."""

    def __init__(self, batches):
        self.batches, self.position = batches, 0

    def __iter__(self):
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def tiny_trainer(log_dir: str, train, val, dropout: float = 0.5, **config):
    """A two-layer model (embedding, head) with ``dropout``, validating every iteration."""
    from adapters.torch import nn
    from adapters.torch.nn import functional as F
    from msmm.train.trainer import TrainConfig, Trainer

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(16, 8), nn.Linear(8, 16)

        def forward(self, input_ids):
            return self.head(F.dropout(self.emb(input_ids), dropout, self.training))

    evaluator = Evaluator(ListSource(val), interval=config.pop("eval_interval", 1), iters=1)
    return Trainer(Tiny(), TrainConfig(lr=1e-2, log_dir=log_dir, **config), ListSource(train), evaluator=evaluator)


def tiny_batches(rng: np.random.Generator, count: int) -> list:
    out = []
    for _ in range(count):
        ids = rng.integers(0, 16, (1, 6))
        out.append({"input_ids": ids, "labels": np.where(rng.random((1, 6)) < 0.3, -100, ids)})
    return out


def token_mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Next-token cross entropy, mean over the counted tokens (labels != -100), in float64."""
    logits, target = logits[:, :-1].astype(np.float64), labels[:, 1:]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    counted = target != -100
    return float(-np.take_along_axis(logp, np.maximum(target, 0)[..., None], -1)[..., 0][counted].mean())


def test_validation_in_the_trainer_is_eval_mode_over_a_cyclic_stream(tmp_path, capsys):
    """A model with dropout 0.5: the validation loss equals the hand computation without dropout
    with the weights of that iteration, over the next micro-batches of the validation stream."""
    rng = np.random.default_rng(0)
    train, val = tiny_batches(rng, 4), tiny_batches(rng, 3)
    save = str(tmp_path / "save")
    trainer = tiny_trainer(save, train, val, train_iters=2, global_batch_size=2, eval_interval=2)
    trainer.train()
    emb, weight, bias = (trainer.model.state_dict()[k].asnumpy() for k in ("emb.weight", "head.weight", "head.bias"))
    expected = [np.mean([token_mean_loss(emb[b["input_ids"]] @ weight.T + bias, b["labels"]) for b in part])
                for part in ([val[0], val[1]], [val[2], val[0]])]  # at iteration 2, then after the last
    with open(os.path.join(save, "validation_log.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["iteration"] for r in logged] == [2, 2]
    np.testing.assert_allclose([r["validation_loss"] for r in logged], expected, rtol=1e-6)
    out = capsys.readouterr().out
    assert f" validation loss at iteration 2 | lm loss value: {logged[0]['validation_loss']:.6E} | lm loss PPL: " in out
    assert trainer.model.training  # back in training mode


def test_a_resumed_run_validates_as_the_uninterrupted_one(tmp_path):
    """The validation stream's position is saved with each checkpoint: resumed at iteration 2,
    the run validates the same micro-batches as the uninterrupted one, and its log ends the same."""
    rng = np.random.default_rng(1)
    train, val = tiny_batches(rng, 4), tiny_batches(rng, 3)
    save = str(tmp_path / "save")
    config = dict(dropout=0.0, train_iters=4, global_batch_size=1, save=save, save_interval=2)  # dropout: not replayed
    tiny_trainer(save, train, val, **config).train()
    log = os.path.join(save, "validation_log.jsonl")
    with open(log) as f:
        uninterrupted = [json.loads(line) for line in f]
    assert [r["iteration"] for r in uninterrupted] == [1, 2, 3, 4, 4]
    resumed = tiny_trainer(save, train, val, **config)
    resumed.load(os.path.join(save, "iter_0000002"))
    resumed.train()
    with open(log) as f:
        again = [json.loads(line) for line in f]
    assert [r["iteration"] for r in again] == [1, 2, 3, 4, 4]
    np.testing.assert_allclose([r["validation_loss"] for r in again], [r["validation_loss"] for r in uninterrupted],
                               rtol=1e-6)


def test_a_resumed_run_drops_later_validation_records(tmp_path):
    from msmm.train.logger import TrainLogger

    logger = TrainLogger(str(tmp_path))
    for iteration in (1, 2, 2):
        logger.validation(iteration, f"iteration {iteration}", 1.0)
    logger.resume_at(1)
    with open(tmp_path / "validation_log.jsonl") as f:
        assert [json.loads(line)["iteration"] for line in f] == [1]


@pytest.mark.slow
def test_validation_loss_equals_an_hf_eval_loop(tmp_path):
    model = hf_model("internvl")
    checkpoint = str(tmp_path / "hf")
    model.save_pretrained(checkpoint, safe_serialization=True)
    train, val = make_batches("internvl", 4, seed=0), make_batches("internvl", 3, seed=1)
    for name, batches in (("train", train), ("val", val)):
        np.savez(tmp_path / f"{name}.npz", **{f"b{i}_{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    save = str(tmp_path / "save")
    # 2 micro-batches of 2 per step; every iteration validates 1 global batch (2 micro-batches) and the
    # last once more: v0 v1 at 1, v2 v0 at 2, v1 v2 after it (the validation stream goes on cyclically)
    config = dict(train_iters=2, global_batch_size=4, micro_batch_size=2, lr=1e-2, save=save, save_interval=1,
                  log_dir=save)
    result = run_worker(dict(family="internvl", checkpoint=checkpoint, batches=str(tmp_path / "train.npz"),
                             config=config, out=str(tmp_path / "out"),
                             validation=dict(batches=str(tmp_path / "val.npz"), interval=1, iters=1)), str(tmp_path))
    with open(os.path.join(save, "validation_log.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["iteration"] for r in logged] == [1, 2, 2]
    expected = [hf_eval_loss(model, save, 1, [val[0], val[1]]), hf_eval_loss(model, save, 2, [val[2], val[0]]),
                hf_eval_loss(model, save, 2, [val[1], val[2]])]
    got = [r["validation_loss"] for r in logged]
    print("validation losses", got, "HF", expected, "rel", [abs(a - b) / b for a, b in zip(got, expected)])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert expected[0] != expected[1]  # the weights changed between the validations
    assert [r["validation_ppl"] for r in logged] == pytest.approx(np.exp(got).tolist())
    line = f" validation loss at iteration 2 on validation set | lm loss value: {got[2]:.6E} | lm loss PPL: "
    assert line in result["stdout"] and "-" * len(line) in result["stdout"]
    assert " validation loss at iteration 1 | lm loss value: " in result["stdout"]
    events = os.listdir(os.path.join(save, "tensorboard"))
    assert any(b"validation/loss" in open(os.path.join(save, "tensorboard", e), "rb").read() for e in events)


def test_eval_flags_are_honoured_not_ignored():
    assert "--eval-interval" not in NO_EFFECT and "--eval-iters" not in NO_EFFECT
    args = parse_train_args(ARGS + ["--eval-interval", "2", "--eval-iters", "3"])
    assert (args.eval_interval, args.eval_iters, args.ignored) == (2, 3, [])
    with pytest.raises(TrainArgsError, match="--eval-interval must be positive, got 0"):
        parse_train_args(ARGS + ["--eval-interval", "0"])


def test_without_validation_data_the_flags_say_they_have_no_effect():
    args = parse_train_args(ARGS + ["--eval-interval", "2", "--eval-iters", "3"])
    evaluator, note = evaluator_from_args(args, parse_data_config(DATA), SimpleNamespace(pp_size=1))
    assert evaluator is None
    assert note == ("--eval-interval, --eval-iters: no effect (no validation data: data.json sets neither "
                    "dataset_param.basic_parameters.val_dataset nor val_rate)")
    assert evaluator_from_args(parse_train_args(ARGS), parse_data_config(DATA), SimpleNamespace(pp_size=1)) == (None, None)


def test_eval_iters_0_and_pipeline_stages():
    data = json.loads(json.dumps(DATA))
    data["dataset_param"]["basic_parameters"]["val_rate"] = 0.1
    config = parse_data_config(data)
    assert evaluator_from_args(parse_train_args(ARGS + ["--eval-iters", "0"]), config, SimpleNamespace(pp_size=2)) == \
        (None, "--eval-iters 0: the validation data of data.json is not evaluated")
    with pytest.raises(ValueError, match="validation loss with pipeline parallelism is not implemented"):
        evaluator_from_args(parse_train_args(ARGS), config, SimpleNamespace(pp_size=2))
    with pytest.raises(ValueError, match=re.escape(PIPELINE_REFUSAL)):  # a Trainer with a pipeline stage refuses it too
        Evaluator(source=None, interval=1, iters=1).bind(SimpleNamespace(stage=object()))
