"""Token choice on the device, inside the compiled decode graphs: repetition penalty, greedy
argmax, and sampling with temperature, top-k and top-p (HF ``generate``'s order and
semantics). Written against the torch API of the model (real PyTorch, or ``adapters.torch``
under ``mindspore.jit``), so only token ids leave the graph.

The settings travel as one float tensor ``controls`` = (temperature, top_k, top_p,
repetition_penalty) (``CONTROLS``), not as Python constants: one compiled graph serves every
request's settings. Randomness comes in as one uniform number per row and step, drawn on the
host from ``numpy.random.default_rng(seed)``: a fixed seed gives the same tokens on every
run, and a graph holds no random state of its own.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CONTROLS = ("temperature", "top_k", "top_p", "repetition_penalty")


def controls(config: Any) -> np.ndarray:
    """The ``controls`` vector [4] float32 of a ``GenerationConfig`` (top_k 0: the vocabulary)."""
    return np.array([config.temperature, config.top_k, config.top_p, config.repetition_penalty], np.float32)


def presence(ids: np.ndarray, vocab: int) -> np.ndarray:
    """[B, vocab] float32, 1 where the row's ``ids`` [B, L] hold the token (the ids the
    repetition penalty counts as seen: HF's whole ``input_ids``, padding included)."""
    seen = np.zeros((ids.shape[0], vocab), np.float32)
    np.put_along_axis(seen, ids, 1.0, 1)
    return seen


def penalize(torch: Any, logits: Any, seen: Any, penalty: Any) -> Any:
    """HF's repetition penalty: logits [B, V] of tokens with ``seen`` [B, V] != 0 divided by
    ``penalty`` (a 0-d / [1] tensor) when positive, multiplied when negative."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen != 0, penalized, logits)


def mark_seen(torch: Any, seen: Any, token: Any) -> Any:
    """``seen`` [B, V] with each row's ``token`` [B, 1] marked."""
    return torch.maximum(seen, (torch.arange(seen.shape[1]).unsqueeze(0) == token).float())


def sample(torch: Any, logits: Any, control: Any, uniform: Any) -> Any:
    """One token per row [B, 1] (int64) drawn from logits [B, V] after temperature, top-k
    and top-p (HF order: top-p over the top-k survivors' renormalised probabilities; the most
    likely token is always kept), by inverse CDF over the tokens sorted by probability with
    ``uniform`` [B] in [0, 1). Tokens the filters drop have probability 0 and are never drawn."""
    vocab = logits.shape[-1]
    scores, order = torch.sort(logits.float() / control[0], -1, True)  # descending
    rank = torch.arange(vocab).unsqueeze(0)
    top_k = torch.where(control[1] > 0, control[1], float(vocab))
    scores = torch.where(rank.float() < top_k, scores, float("-inf"))
    probs = torch.softmax(scores, -1)
    before = torch.cumsum(probs, -1) - probs  # the mass of the more likely tokens
    probs = torch.where((before < control[2]) | (rank == 0) | (control[2] >= 1), probs, 0.0)
    cdf = torch.cumsum(probs, -1)
    target = uniform.unsqueeze(1) * cdf[:, vocab - 1:]  # [B, 1]: a point in the kept mass
    pick = torch.clamp((cdf <= target).long().sum(-1, keepdim=True), max=vocab - 1)
    return torch.gather(order, 1, pick)
