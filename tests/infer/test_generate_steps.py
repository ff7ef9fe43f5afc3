"""Several decode steps per graph call and tokens chosen on the device (``decode_block``,
``msmm.infer.sampling``), on a tiny text Qwen2 on MindSpore: greedy tokens equal HF
``generate``'s with a stop token met inside a block, rows of different prompt lengths and a
length that is no multiple of the block; the repetition penalty equals HF's; sampling with
a seed is reproducible and independent of the steps per call, and top-k / top-p never draw
a token they filter out (checked on the sampler itself, on MindSpore and on real torch)."""
from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from msmm import runtime
from msmm.infer import sampling
from msmm.infer.generate import GenerationConfig, generate_stream

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402
from test_generate_text import IDS, MASK, ours_from, reference  # noqa: E402

STEPS = 4


def hf_tokens(ref, new: int, **options) -> np.ndarray:
    with torch.no_grad():
        out = ref.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=new,
                           do_sample=False, **options)
    return out[:, IDS.shape[1]:].numpy()


@pytest.fixture(scope="module")
def models():
    """(HF reference, our converted model on MindSpore)."""
    ref, _ = reference()
    ms = ms_backend.converted_models()
    with ms_backend.converted_in_sys_modules():
        model = ours_from(ref, ms.text, ms.torch.tensor)
    return ref, model


def ours(model, config: GenerationConfig, steps: int = STEPS) -> np.ndarray:
    with ms_backend.converted_in_sys_modules():
        return np.stack(list(generate_stream(model, IDS, MASK, config, steps)), 1)


def test_stop_inside_a_block_and_a_length_past_the_last_block(models):
    ref, model = models
    plain = hf_tokens(ref, 7, pad_token_id=0, eos_token_id=None)
    np.testing.assert_array_equal(ours(model, GenerationConfig(max_new_tokens=7)), plain)  # 6 decode steps: 2 calls
    stop = int(plain[0, 2])  # row 0 stops at its third token, inside the first call's block
    expected = hf_tokens(ref, 7, pad_token_id=95, eos_token_id=stop)
    got = ours(model, GenerationConfig(max_new_tokens=7, stop_token_ids=(stop,), pad_token_id=95))
    np.testing.assert_array_equal(got, expected)
    assert (got[0, 3:] == 95).all()


def test_repetition_penalty_on_the_device_equals_hf(models):
    ref, model = models
    expected = hf_tokens(ref, 8, pad_token_id=0, eos_token_id=None, repetition_penalty=1.5)
    assert not np.array_equal(expected, hf_tokens(ref, 8, pad_token_id=0, eos_token_id=None))
    np.testing.assert_array_equal(ours(model, GenerationConfig(max_new_tokens=8, repetition_penalty=1.5)), expected)


def test_sampling_with_a_seed_is_reproducible_and_top_k_1_is_greedy(models):
    ref, model = models
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=20, top_p=0.95, seed=3)
    first = ours(model, config)
    np.testing.assert_array_equal(ours(model, config), first)
    np.testing.assert_array_equal(ours(model, config, steps=1), first)  # the same draws, one step per call
    assert not np.array_equal(ours(model, replace(config, seed=4)), first)
    greedy = ours(model, GenerationConfig(max_new_tokens=8, do_sample=True, top_k=1, seed=5))
    np.testing.assert_array_equal(greedy, hf_tokens(ref, 8, pad_token_id=0, eos_token_id=None))


def _allowed(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """[B, V] bool: the tokens HF's warpers keep (numpy, float64)."""
    scores = logits.astype(np.float64) / temperature
    order = np.argsort(-scores, -1)
    keep = np.zeros(scores.shape, bool)
    for b in range(len(scores)):
        probs = np.exp(scores[b, order[b, :top_k]] - scores[b, order[b, 0]])
        probs /= probs.sum()
        before = np.cumsum(probs) - probs
        keep[b, order[b, :top_k][before < top_p]] = True
    return keep


def sampler_draws(backend: str, logits: np.ndarray, control: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """``sampling.sample`` of each row of ``logits`` with each of the ``uniform`` numbers."""
    rows = np.repeat(logits, len(uniform), 0)
    u = np.tile(uniform, len(logits)).astype(np.float32)
    if backend == "torch":
        got = sampling.sample(torch, torch.tensor(rows), torch.tensor(control), torch.tensor(u))
        return got.numpy().reshape(len(logits), len(uniform))
    runtime.start(convert_models=False)
    import adapters.torch as ms_torch

    def draw(rows, control, u):
        return sampling.sample(ms_torch, rows, control, u)

    got = runtime.jit(draw)(ms_torch.tensor(rows), ms_torch.tensor(control), ms_torch.tensor(u))
    return got.asnumpy().reshape(len(logits), len(uniform))


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_sampler_draws_only_kept_tokens_in_proportion(backend, rng):
    logits = (rng.standard_normal((3, 40)) * 2).astype(np.float32)
    uniform = (np.arange(400) + 0.5) / 400  # evenly over [0, 1): frequencies follow the kept probabilities
    for temperature, top_k, top_p in ((1.0, 5, 1.0), (0.7, 0, 0.6), (1.3, 8, 0.8)):
        draws = sampler_draws(backend, logits, np.array([temperature, top_k, top_p, 1.0], np.float32), uniform)
        keep = _allowed(logits, temperature, top_k or logits.shape[1], top_p)
        for b in range(len(logits)):
            assert keep[b, draws[b]].all(), (temperature, top_k, top_p)
            probs = np.where(keep[b], np.exp(logits[b] / temperature - (logits[b] / temperature).max()), 0)
            counts = np.bincount(draws[b], minlength=logits.shape[1]) / len(uniform)
            np.testing.assert_allclose(counts, probs / probs.sum(), atol=2 / len(uniform))
