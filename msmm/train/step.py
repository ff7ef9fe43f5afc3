"""The compiled training step: gradient accumulation, clipping, AdamW.

Three graphs (``mindspore.jit``, AST capture), each compiled once per input shape:

* ``micro_step(labels, **inputs)``: forward + backward of one micro-batch over the
  trainable parameters only (``value_and_grad`` with ``weights=``; frozen parameters get no
  gradient), the gradient added in-graph into one flat fp32 buffer;
* ``grad_norm(flat)``: the global L2 norm of the (scaled) accumulated gradient;
* ``apply(flat, lr, coef)``: ``grad = flat * coef`` (coef = 1/denominator times the clip
  factor), split per parameter, one AdamW update, buffer zeroed.

Between them, in Python: the data-parallel all-reduce of the flat buffer (one collective),
the NaN/Inf checks, and the clip factor ``min(1, clip / (norm + 1e-6))`` (Megatron's and
``torch.nn.utils.clip_grad_norm_``'s).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .loss import REDUCTIONS, reduce_loss, token_losses
from .optimizer import AdamW


class NonFiniteError(FloatingPointError):
    """A NaN or Inf loss or gradient; the message says which and at which step."""


@dataclass
class MicroResult:
    numerator: float
    denominator: float
    tokens: int  # counted (label) tokens


class TrainStep(nn.Cell):
    """Owns the gradient buffer and the compiled graphs for ``model`` and ``optimizer``."""

    def __init__(self, model: nn.Cell, optimizer: AdamW, reduction: str = "micro_batch",
                 clip_grad: float = 0.0) -> None:
        super().__init__(auto_prefix=False)
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model, self.optimizer = model, optimizer
        self.reduction, self.clip_grad = reduction, float(clip_grad)
        self.weights = optimizer.params
        self.sizes = optimizer.sizes
        self.grad_acc = Parameter(ops.zeros(sum(self.sizes), mindspore.float32), name="grad_acc", requires_grad=False)
        self._grad_fn = mindspore.value_and_grad(self._loss, None, self.weights, has_aux=True)
        self.micro_step = mindspore.jit(self._micro_step)
        self.grad_norm = mindspore.jit(self._grad_norm)
        self.apply = mindspore.jit(self._apply)
        self.zero_grad = mindspore.jit(self._zero_grad)
        self.sync_master = mindspore.jit(self._sync_master)
        self.sync_master()

    def _loss(self, labels: Tensor, inputs: Dict[str, Tensor]):
        logits = self.model(**inputs)
        losses, mask = token_losses(logits, labels)
        numerator, denominator = reduce_loss(losses, mask, self.reduction)
        return numerator, denominator, mask.sum()

    def _micro_step(self, labels: Tensor, inputs: Dict[str, Tensor]):
        (numerator, denominator, tokens), grads = self._grad_fn(labels, inputs)
        flat = ops.concat([g.reshape(-1).astype(mindspore.float32) for g in grads])
        ops.assign_add(self.grad_acc, flat)
        return numerator, denominator, tokens

    def _grad_norm(self, flat: Tensor, scale: Tensor) -> Tensor:
        g = flat * scale
        return ops.sqrt((g * g).sum())

    def _apply(self, flat: Tensor, lr: Tensor, coef: Tensor) -> Tensor:
        step = self.optimizer(flat * coef, lr)
        ops.assign(self.grad_acc, ops.zeros_like(self.grad_acc))
        return step

    def _sync_master(self) -> Tensor:
        return self.optimizer.sync_master()

    def _zero_grad(self) -> Tensor:
        ops.assign(self.grad_acc, ops.zeros_like(self.grad_acc))
        return self.grad_acc.sum()

    # ---- Python driver ---------------------------------------------------------------------

    def forward_backward(self, batch: Dict[str, Tensor]) -> MicroResult:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        # mutable: a dict argument of a compiled function is otherwise a compile-time constant
        numerator, denominator, tokens = self.micro_step(labels, mindspore.mutable(inputs))
        return MicroResult(float(numerator.asnumpy()), float(denominator.asnumpy()), int(tokens.asnumpy()))

    def first_nonfinite_grad(self, flat: Tensor) -> Optional[str]:
        """Name of the first parameter whose gradient holds a NaN or Inf (for the error message)."""
        values = flat.asnumpy()
        start = 0
        for name, size in zip(self.optimizer.names, self.sizes):
            if not np.isfinite(values[start:start + size]).all():
                return name
            start += size
        return None
