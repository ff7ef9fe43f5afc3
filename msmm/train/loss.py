"""Next-token cross entropy and how it is reduced over a global batch (MindSpore ops).

A micro-batch contributes a loss *numerator* (what is differentiated) and a *denominator*;
the trainer sums both over the micro-batches (and data-parallel ranks) of a global batch and
divides the accumulated gradient by the total denominator. The reported loss is
``sum(numerators) / sum(denominators)``. Reductions, as in MindSpeed-MM:

* ``"micro_batch"`` (default): each micro-batch's mean over its counted tokens, averaged
  over micro-batches (numerator = that mean, denominator = 1);
* ``"token"`` (``--calculate-per-token-loss``): the mean over every counted token of the
  global batch (numerator = sum of token losses, denominator = token count);
* ``"sample"`` (``--calculate-per-sample-loss``): each sample's mean over its tokens,
  averaged over the samples that have any (numerator = sum of sample means, denominator =
  number of such samples). A sample is a row of the micro-batch (no packing).
"""
from __future__ import annotations

from typing import Tuple

import mindspore
from mindspore import Tensor, ops

IGNORE_INDEX = -100
REDUCTIONS = ("micro_batch", "token", "sample")


def token_losses(logits: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-position losses [B, L] and the 0/1 mask of counted positions [B, L] (fp32).

    logits [B, L, V]; labels [B, L], -100 = not counted. Position t predicts labels[:, t + 1];
    the last position predicts nothing.
    """
    b = labels.shape[0]
    shifted = ops.concat((labels[:, 1:], ops.full((b, 1), IGNORE_INDEX, dtype=labels.dtype)), axis=1)
    mask = (shifted != IGNORE_INDEX).astype(mindspore.float32)
    target = ops.maximum(shifted, 0).astype(mindspore.int32)
    log_probs = ops.log_softmax(logits.astype(mindspore.float32), axis=-1)
    picked = ops.gather_elements(log_probs, 2, target.expand_dims(-1)).squeeze(-1)
    return -picked * mask, mask


def reduce_loss(losses: Tensor, mask: Tensor, reduction: str) -> Tuple[Tensor, Tensor]:
    """(numerator, denominator) of one micro-batch under ``reduction`` (see the module doc)."""
    if reduction == "token":
        return losses.sum(), mask.sum()
    if reduction == "sample":
        per_row = mask.sum(axis=1)
        has_tokens = (per_row > 0).astype(mindspore.float32)
        return (losses.sum(axis=1) / ops.maximum(per_row, 1.0)).sum(), has_tokens.sum()
    return losses.sum() / ops.maximum(mask.sum(), 1.0), ops.ones((), mindspore.float32)
