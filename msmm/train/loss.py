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
  number of such samples). A sample is a row of the micro-batch (``msmm-train`` refuses it
  with packing: ``startup_checks.check_packing``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore
import numpy as np
from mindspore import Tensor, nn, ops

IGNORE_INDEX = -100
REDUCTIONS = ("micro_batch", "token", "sample")


def token_losses(logits: Tensor, labels: Tensor,
                 vocab_parallel: Optional["VocabParallelCrossEntropy"] = None,
                 shifted: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-position losses [B, L] and the 0/1 mask of counted positions [B, L] (fp32).

    logits [B, L, V] (or this rank's vocabulary entries, with ``vocab_parallel``); labels
    [B, L], -100 = not counted. Position t predicts labels[:, t + 1]; the last position
    predicts nothing. ``shifted``: labels[:, t] is already position t's target (context
    parallelism shifts on the whole sequence before a rank keeps its part).
    """
    b = labels.shape[0]
    targets = labels if shifted else \
        ops.concat((labels[:, 1:], ops.full((b, 1), IGNORE_INDEX, dtype=labels.dtype)), axis=1)
    mask = (targets != IGNORE_INDEX).astype(mindspore.float32)
    target = ops.maximum(targets, 0).astype(mindspore.int32)
    if vocab_parallel is not None:
        rows = logits.shape[-1]
        losses = vocab_parallel(logits.astype(mindspore.float32).reshape(-1, rows), target.reshape(-1))
        return losses.reshape(target.shape) * mask, mask
    log_probs = ops.log_softmax(logits.astype(mindspore.float32), axis=-1)
    picked = ops.gather_elements(log_probs, 2, target.expand_dims(-1)).squeeze(-1)
    return -picked * mask, mask


def micro_batch_loss(logits: Tensor, labels: Tensor, reduction: str,
                     vocab_parallel: Optional["VocabParallelCrossEntropy"] = None,
                     row_counts: Optional[Tensor] = None, share: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
    """(numerator, denominator, counted tokens) of one micro-batch's logits: ``token_losses``
    then ``reduce_loss``. With ``row_counts`` (context parallelism) the labels are already
    shifted and this rank's, ``share`` = 1 / CP."""
    losses, mask = token_losses(logits, labels, vocab_parallel, shifted=row_counts is not None)
    numerator, denominator = reduce_loss(losses, mask, reduction, row_counts, share)
    return numerator, denominator, mask.sum()


def reduce_loss(losses: Tensor, mask: Tensor, reduction: str, row_counts: Optional[Tensor] = None,
                share: float = 1.0) -> Tuple[Tensor, Tensor]:
    """(numerator, denominator) of one micro-batch under ``reduction`` (see the module doc).

    Context parallelism: a rank holds part of every row; ``row_counts`` [B] are the rows' counted
    tokens over the whole sequence and ``share`` = 1 / CP, so the ranks' numerators and
    denominators add up to the micro-batch's."""
    if reduction == "token":
        return losses.sum(), mask.sum()
    per_row = mask.sum(axis=1) if row_counts is None else row_counts.astype(mindspore.float32)
    if reduction == "sample":
        has_tokens = (per_row > 0).astype(mindspore.float32)
        return (losses.sum(axis=1) / ops.maximum(per_row, 1.0)).sum(), has_tokens.sum() * share
    return losses.sum() / ops.maximum(per_row.sum(), 1.0), ops.ones((), mindspore.float32) * share


class VocabParallelCrossEntropy(nn.Cell):
    """Per-token ``logsumexp(logits) - logits[target]`` when the vocabulary is split across
    the tensor-parallel ranks (Megatron's vocab-parallel cross entropy): logits [N, R] hold
    this rank's R vocabulary entries from ``rank * R``; entries at or past ``vocab_size``
    (padding) are left out. Each rank's log-sum-exp is exchanged through one all-reduce of
    zero-padded rows (exact; the CPU has no MAX all-reduce), the target logit through a
    second; the gradient is Megatron's ``softmax - one_hot`` of the local entries (custom
    ``bprop``: the collectives are not differentiated)."""

    def __init__(self, group: str, rank: int, size: int, rows: int, vocab_size: int) -> None:
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM, group)
        self.start, self.rows = rank * rows, rows
        # 0 for this rank's real entries, -1e30 for padding: padded logits drop out of every sum
        self.padding = Tensor(np.where(rank * rows + np.arange(rows) < vocab_size, 0.0, -1e30).astype(np.float32))
        slot = np.zeros((size, 1), np.float32)
        slot[rank] = 1.0
        self.slot = Tensor(slot)
        self.columns = Tensor(np.arange(rows, dtype=np.int32))
        self.exp, self.log, self.select = ops.Exp(), ops.Log(), ops.Select()
        self.reduce_max, self.reduce_sum = ops.ReduceMax(keep_dims=True), ops.ReduceSum(keep_dims=False)
        self.gather, self.zeros_like, self.cast = ops.GatherD(), ops.ZerosLike(), ops.Cast()

    def _lse(self, masked: Tensor) -> Tensor:
        """logsumexp over the whole (unpadded) vocabulary, [N]."""
        top = self.reduce_max(masked, 1)
        local = self.log(self.reduce_sum(self.exp(masked - top), 1)) + top[:, 0]  # [N]
        gathered = self.all_reduce(self.slot * local.reshape(1, -1))  # [size, N]
        peak = self.reduce_max(gathered, 0)
        return self.log(self.reduce_sum(self.exp(gathered - peak), 0)) + peak[0]

    def _local_target(self, target: Tensor):
        local = target - self.start
        inside = (local >= 0) & (local < self.rows)
        return self.select(inside, local, self.zeros_like(local)), inside

    def construct(self, logits: Tensor, target: Tensor) -> Tensor:
        masked = logits + self.padding
        local, inside = self._local_target(target)
        picked = self.gather(masked, 1, local.reshape(-1, 1))[:, 0] * self.cast(inside, mindspore.float32)
        return self._lse(masked) - self.all_reduce(picked)

    def bprop(self, logits, target, out, dout):
        masked = logits + self.padding
        probs = self.exp(masked - self._lse(masked).reshape(-1, 1))  # padding entries: exp(-1e30) = 0
        local, inside = self._local_target(target)
        hit = (self.columns.reshape(1, -1) == local.reshape(-1, 1)) & inside.reshape(-1, 1)
        return (probs - self.cast(hit, mindspore.float32)) * dout.reshape(-1, 1), self.zeros_like(target)
