"""Comparison helpers for the model parity tests (reference side vs msmm side).

Both sides hand back plain numpy: logits, loss and {parameter name: gradient}, so the
msmm side can later run on another backend and be compared by the same code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

LOGITS_ATOL = 1e-4
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4


@dataclass
class RunResult:
    logits: np.ndarray
    loss: float
    grads: Dict[str, np.ndarray]


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref|| (Frobenius); absolute error if ref is all zeros."""
    diff = float(np.linalg.norm((np.asarray(ours, np.float64) - np.asarray(ref, np.float64)).ravel()))
    scale = float(np.linalg.norm(np.asarray(ref, np.float64).ravel()))
    return diff / scale if scale > 0 else diff


def torch_grads(model) -> Dict[str, np.ndarray]:
    return {
        name: p.grad.detach().numpy().copy()
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def assert_parity(ours: RunResult, ref: RunResult, valid: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Asserts the issue's tolerances and returns the measured errors.

    ``valid`` [B, L] restricts the logits comparison to real (non-padding) tokens.
    ``ours.grads`` must hold exactly the reference's parameter names.
    """
    assert ours.logits.shape == ref.logits.shape, (ours.logits.shape, ref.logits.shape)
    diff = np.abs(ours.logits - ref.logits)
    if valid is not None:
        diff = diff[valid.astype(bool)]
    logits_err = float(diff.max())
    loss_err = abs(ours.loss - ref.loss) / abs(ref.loss)
    assert set(ours.grads) == set(ref.grads), (
        sorted(set(ours.grads) ^ set(ref.grads))[:10]
    )
    grad_errs = {name: rel_err(ours.grads[name], ref.grads[name]) for name in ref.grads}
    worst = max(grad_errs, key=grad_errs.get)
    assert logits_err <= LOGITS_ATOL, f"logits max abs err {logits_err:.3g}"
    assert loss_err <= LOSS_RTOL, f"loss rel err {loss_err:.3g} ({ours.loss} vs {ref.loss})"
    assert grad_errs[worst] <= GRAD_RTOL, f"grad rel err {grad_errs[worst]:.3g} at {worst}"
    return {"logits_abs": logits_err, "loss_rel": loss_err, "grad_rel": grad_errs[worst]}
