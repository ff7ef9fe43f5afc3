"""Parity assertions for the vision-language tests (InternViT, CLIP, InternVL, LLaVA).

Same tolerances as ``parity_utils``, with one difference for gradients: in a ViT without
rotary embeddings, the key-projection bias adds the same q.b to every score of a query,
which softmax cancels, so its true gradient is exactly zero and both sides hold rounding
noise, whose relative difference means nothing. For those parameters (``ZERO_GRAD``) both
gradients must be below ZERO_GRAD_ATOL times the largest gradient norm instead.
"""
from __future__ import annotations

import re
from typing import Dict, Optional

import numpy as np

from parity_utils import GRAD_RTOL, LOGITS_ATOL, LOSS_RTOL, RunResult

ZERO_GRAD = re.compile(r"^(vision_tower\.|vision_model\.)?(vision_model\.)?(embeddings|encoder)\..*\.k_proj\.bias$")
ZERO_GRAD_ATOL = 1e-6


def _norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(x, np.float64).ravel()))


def grad_errors(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Relative error per parameter; for ``ZERO_GRAD`` ones, the larger of both gradient
    norms over ZERO_GRAD_ATOL * the largest reference norm, scaled so that <= GRAD_RTOL passes."""
    assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))[:10]
    largest = max(_norm(v) for v in ref.values())
    errs = {}
    for k in ref:
        if ZERO_GRAD.match(k):
            errs[k] = max(_norm(ours[k]), _norm(ref[k])) / (ZERO_GRAD_ATOL * largest) * GRAD_RTOL
        else:
            errs[k] = _norm(ours[k] - ref[k]) / _norm(ref[k])
    return errs


def assert_grads(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray]) -> float:
    errs = grad_errors(ours, ref)
    worst = max(errs, key=errs.get)
    assert errs[worst] <= GRAD_RTOL, f"grad rel err {errs[worst]:.3g} at {worst}"
    return errs[worst]


def assert_vlm_parity(ours: RunResult, ref: RunResult, valid: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Logits max abs err (on ``valid`` tokens) <= 1e-4, loss rel err <= 1e-5, grads as above."""
    assert ours.logits.shape == ref.logits.shape, (ours.logits.shape, ref.logits.shape)
    diff = np.abs(ours.logits - ref.logits)
    if valid is not None:
        diff = diff[valid.astype(bool)]
    logits_err = float(diff.max())
    loss_err = abs(ours.loss - ref.loss) / abs(ref.loss)
    assert logits_err <= LOGITS_ATOL, f"logits max abs err {logits_err:.3g}"
    assert loss_err <= LOSS_RTOL, f"loss rel err {loss_err:.3g} ({ours.loss} vs {ref.loss})"
    return {"logits_abs": logits_err, "loss_rel": loss_err, "grad_rel": assert_grads(ours.grads, ref.grads)}
