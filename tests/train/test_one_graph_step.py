"""The training step's fast paths: one ``SumSquares`` kernel for the gradient norm (fused and
composite, against numpy), and one compiled graph per step for a single micro-batch on one
rank (with the one-kernel optimizer step, and with the in-graph guard the unfused optimizer
takes), which must train exactly like the accumulating three-graph step and skip a non-finite
step in-graph (parameters, moments and step count unchanged) as the host check does."""
from __future__ import annotations

import math

import mindspore
import numpy as np
import pytest
from mindspore import Tensor

from msmm.train.step import NonFiniteError
from test_validation import ListSource

VOCAB, WIDTH = 16, 8


def test_sum_squares_matches_numpy(rng):
    from adapters.kernels import optim

    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in ((3, 5), (7,), (300, 70), (1,))]
    expected = sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays) * 0.25
    tensors = [Tensor(a) for a in arrays]
    scale = Tensor([0.5], mindspore.float32)
    for fn in {optim.sum_squares, optim._composite_sum_squares}:
        compiled = mindspore.jit(fn)
        assert float(compiled(tensors, scale).asnumpy()[0]) == pytest.approx(expected, rel=1e-6)
        assert float(fn(tensors, scale).asnumpy()[0]) == pytest.approx(expected, rel=1e-6)


def tiny_trainer(monkeypatch, one_graph: bool, batches, fused: bool = True, **config):
    """Embedding, a gate (``sqrt(gate)``: a zero entry has a finite output, an infinite
    gradient) and a head."""
    from adapters import torch
    from adapters.torch import nn
    from msmm.train.trainer import ONE_GRAPH_ENV, TrainConfig, Trainer

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(VOCAB, WIDTH), nn.Linear(WIDTH, VOCAB)
            self.gate = nn.Parameter(torch.ones(WIDTH))

        def forward(self, input_ids):
            return self.head(self.emb(input_ids) * torch.sqrt(self.gate))

    mindspore.set_seed(0)
    monkeypatch.setenv(ONE_GRAPH_ENV, "1" if one_graph else "0")
    settings = dict(train_iters=len(batches), global_batch_size=2, micro_batch_size=2, lr=1e-2, clip_grad=0.5,
                    log_interval=10**6)
    trainer = Trainer(Tiny(), TrainConfig(**{**settings, **config}), ListSource(batches))
    assert trainer.step_fn.one_graph == one_graph
    if not fused:
        trainer.optimizer.fused = False
    elif not trainer.optimizer.fused:
        pytest.skip("fused kernels off or not built")
    return trainer


def make_batches(rng, count: int):
    out = []
    for _ in range(count):
        ids = rng.integers(1, VOCAB, size=(2, 6))
        labels = ids.copy()
        labels[:, :2] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def weights(trainer):
    return {n: p.asnumpy().copy() for n, p in trainer.model.state_dict().items()}


@pytest.mark.parametrize("fused", [True, False])
def test_one_graph_step_trains_like_the_three_graph_step(monkeypatch, rng, fused):
    batches = make_batches(rng, 3)
    runs = []
    for one_graph in (False, True):
        trainer = tiny_trainer(monkeypatch, one_graph, batches, fused)
        runs.append((trainer.train(), weights(trainer), trainer.optimizer.state_arrays(False)))
    (three, w3, s3), (one, w1, s1) = runs
    for a, b in zip(three, one):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert not a["skipped"] and not b["skipped"]
    assert three[0]["grad_norm"] > 0.5  # clipping was active
    for name in w3:
        np.testing.assert_allclose(w1[name], w3[name], rtol=1e-5, atol=1e-7)
    for key in s3:
        np.testing.assert_allclose(s1[key], s3[key], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("one_graph", [False, True])
@pytest.mark.parametrize("reduction,clip", [("micro_batch", 0.5), ("token", 100.0)])
def test_one_kernel_step_trains_like_torch_adamw(monkeypatch, rng, reduction, clip, one_graph):
    """The one-kernel optimizer step (after the gradient buffers, and in the one-graph step)
    against torch: the same Tiny model, ``clip_grad_norm_`` and ``torch.optim.AdamW`` (decay
    groups as Megatron's), 4 steps, with clipping active and with a bound never reached."""
    import torch

    batches = make_batches(rng, 4)
    trainer = tiny_trainer(monkeypatch, one_graph, batches, lr_decay_style="constant", weight_decay=0.1,
                           adam_beta2=0.95, loss_reduction=reduction, clip_grad=clip)
    start = weights(trainer)
    history = trainer.train()

    emb, head = torch.nn.Embedding(VOCAB, WIDTH), torch.nn.Linear(WIDTH, VOCAB)
    gate = torch.nn.Parameter(torch.tensor(start["gate"]))
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(start["emb.weight"]))
        head.weight.copy_(torch.tensor(start["head.weight"]))
        head.bias.copy_(torch.tensor(start["head.bias"]))
    opt = torch.optim.AdamW([{"params": [emb.weight, head.weight], "weight_decay": 0.1},
                             {"params": [head.bias, gate], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95))
    params = [emb.weight, head.weight, head.bias, gate]
    for batch, ours in zip(batches, history):
        logits = head(emb(torch.tensor(batch["input_ids"])) * torch.sqrt(gate))
        targets = torch.tensor(batch["labels"])[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), targets.reshape(-1),
                                                   ignore_index=-100, reduction="none").reshape(targets.shape)
        counted = (targets != -100).float()
        loss = (losses * counted).sum() / counted.sum()  # one micro-batch: both reductions are this mean
        opt.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        opt.step()
        assert ours["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(norm, rel=1e-4)
        assert not ours["skipped"]
    assert (history[0]["grad_norm"] > clip) == (clip < 1)  # clipping active / never
    final = weights(trainer)
    for name, reference in (("emb.weight", emb.weight), ("head.weight", head.weight), ("head.bias", head.bias),
                            ("gate", gate)):
        assert not np.array_equal(final[name], start[name])
        np.testing.assert_allclose(final[name], reference.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert int(trainer.optimizer.step.asnumpy()) == 4
    assert trainer.step_fn.fused_update  # the three-graph run took the one-kernel update too


ONE_GRAPH_VARIANTS = [(False, True), (True, True), (True, False)]  # (one_graph, fused)


@pytest.mark.parametrize("one_graph,fused", ONE_GRAPH_VARIANTS)
def test_non_finite_step_is_skipped_or_stops_alike(monkeypatch, rng, one_graph, fused):
    batches = make_batches(rng, 2)
    batches[1]["input_ids"][0, 3] = 0  # token 0's embedding row is NaN: the second step's loss is NaN
    trainer = tiny_trainer(monkeypatch, one_graph, batches, fused, skip_nonfinite_steps=True)
    emb = trainer.model.emb.weight
    values = emb.asnumpy().copy()
    values[0] = np.nan
    emb.set_data(Tensor(values))
    first = trainer.train_step()
    before, state = weights(trainer), trainer.optimizer.state_arrays(False)
    second = trainer.train_step()
    assert not first["skipped"] and second["skipped"] and math.isnan(second["loss"])
    assert trainer.iteration == 2
    after = weights(trainer)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    for key, value in trainer.optimizer.state_arrays(False).items():
        np.testing.assert_array_equal(value, state[key])

    stopping = tiny_trainer(monkeypatch, one_graph, batches[1:], fused)
    stopping.model.emb.weight.set_data(Tensor(values))
    with pytest.raises(NonFiniteError, match="iteration 1: the loss is nan"):
        stopping.train_step()


@pytest.mark.parametrize("one_graph,fused", ONE_GRAPH_VARIANTS)
def test_non_finite_gradient_with_a_finite_loss_is_named(monkeypatch, rng, one_graph, fused):
    trainer = tiny_trainer(monkeypatch, one_graph, make_batches(rng, 1), fused)
    trainer.model.gate.set_data(Tensor(np.array([0.0] + [1.0] * (WIDTH - 1), np.float32)))
    with pytest.raises(NonFiniteError, match=r"gradient norm is (inf|nan) \(first non-finite gradient: gate\)"):
        trainer.train_step()


def test_fused_adamw_updates_like_adam_weight_decay(rng):
    """One in-place kernel for every parameter equals one AdamWeightDecay per parameter,
    weight decay groups, the gradient scale and the step count included."""
    from adapters.kernels import optim
    from mindspore import Parameter
    from msmm.train.optimizer import AdamW

    if not optim.AVAILABLE:
        pytest.skip("fused kernels off or not built")
    shapes = {"a.weight": (300, 70), "a.bias": (70,), "norm.weight": (5,), "b.weight": (3, 4)}
    start = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    grads = [[Tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes.values()] for _ in range(3)]
    results = []
    for fused in (False, True):
        opt = AdamW([(n, Parameter(Tensor(v), name=n)) for n, v in start.items()], weight_decay=0.1, betas=(0.9, 0.95))
        assert opt.fused
        opt.fused = fused
        update = mindspore.jit(opt.construct)
        for g in grads:
            update(mindspore.mutable(tuple(g)), Tensor(1e-2, mindspore.float32), Tensor(0.7, mindspore.float32))
        results.append(({n: p.asnumpy() for n, p in zip(opt.names, opt.params)}, opt.state_arrays(False)))
    (weights_ref, state_ref), (weights, state) = results
    assert int(state["optimizer.step"][0]) == 3
    for name in shapes:
        assert not np.array_equal(weights[name], start[name])
        np.testing.assert_allclose(weights[name], weights_ref[name], rtol=1e-6, atol=1e-7)
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], rtol=1e-5, atol=1e-9)
