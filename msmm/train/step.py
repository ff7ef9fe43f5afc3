"""The compiled training step: gradient accumulation, clipping, AdamW.

Three graphs (``mindspore.jit``, AST capture), each compiled once per input shape:

* ``micro_step(labels, **inputs)``: forward + backward of one micro-batch over the
  trainable parameters only (``value_and_grad`` with ``weights=``; frozen parameters get no
  gradient), each gradient written (first micro-batch of a step: ``ops.assign``, so no
  zeroing pass is needed) or added (``ops.assign_add``) in-graph into its fp32 buffer;
* ``grad_norm(scale)``: the global L2 norm of the (scaled) accumulated gradients;
* ``apply(lr, coef)``: one AdamW update from the gradients times ``coef`` (coef = 1/denominator
  times the clip factor).

Between them, in Python: the data-parallel all-reduce of the gradient buffers, the NaN/Inf
checks, and the clip factor ``min(1, clip / (norm + 1e-6))`` (Megatron's and
``torch.nn.utils.clip_grad_norm_``'s).

Every graph is compiled through ``msmm.runtime.jit``, which keeps the compiled callables alive
for the process (MindSpore caches graphs by the callable's id()). :func:`compiled_value_and_grad`
is the same machinery for a model's own loss, outside the trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from msmm import runtime

from .loss import REDUCTIONS, reduce_loss, token_losses
from .optimizer import AdamW


def compiled_value_and_grad(
    model: nn.Cell,
    weights: Optional[Sequence[Parameter]] = None,
    loss_fn: Optional[Callable[..., Any]] = None,
) -> Callable[[Dict[str, Tensor]], Any]:
    """``((loss, *aux), grads) = step(inputs)``: a model's loss and its gradients, one graph.

    ``inputs`` is a dict of keyword tensors; the loss and the outputs that come with it are
    ``loss_fn(inputs)``, by default ``model(**inputs)`` (with ``labels`` the msmm models
    return (loss, logits)): the first output is differentiated, the others come back as they
    are. ``grads`` is one gradient per weight, in order; weights default to the model's
    trainable parameters (``requires_grad``). ``mindspore.value_and_grad`` compiled with
    ``msmm.runtime.jit`` (graphs kept for the process) on first call per input shapes; the dict
    goes in as ``mindspore.mutable`` (a plain dict argument would be a compile-time constant).
    """
    if weights is None:
        weights = model.trainable_params()
    if loss_fn is None:
        def loss_fn(inputs):
            return model(**inputs)

    compiled = runtime.jit(mindspore.value_and_grad(loss_fn, None, list(weights), has_aux=True))

    def step(inputs: Dict[str, Tensor]):
        return compiled(mindspore.mutable(dict(inputs)))

    return step


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
        self.grad_acc = mindspore.ParameterTuple([
            Parameter(ops.zeros(p.shape, mindspore.float32), name=f"grad_acc.{name}", requires_grad=False)
            for name, p in zip(optimizer.names, self.weights)])
        self._accumulating = False  # False: the next micro-batch overwrites the buffers
        self._grad_fn = mindspore.value_and_grad(self._loss, None, self.weights, has_aux=True)
        self.micro_step_first = runtime.jit(self._micro_step_first)
        self.micro_step = runtime.jit(self._micro_step)
        self.grad_norm = runtime.jit(self._grad_norm)
        self.apply = runtime.jit(self._apply)
        self.sync_master = runtime.jit(self._sync_master)
        self.sync_master()

    def _loss(self, labels: Tensor, inputs: Dict[str, Tensor]):
        logits = self.model(**inputs)
        losses, mask = token_losses(logits, labels)
        numerator, denominator = reduce_loss(losses, mask, self.reduction)
        return numerator, denominator, mask.sum()

    def _micro_step_first(self, labels: Tensor, inputs: Dict[str, Tensor]):
        (numerator, denominator, tokens), grads = self._grad_fn(labels, inputs)
        for k in range(len(grads)):
            ops.assign(self.grad_acc[k], grads[k].astype(mindspore.float32))
        return numerator, denominator, tokens

    def _micro_step(self, labels: Tensor, inputs: Dict[str, Tensor]):
        (numerator, denominator, tokens), grads = self._grad_fn(labels, inputs)
        for k in range(len(grads)):
            ops.assign_add(self.grad_acc[k], grads[k].astype(mindspore.float32))
        return numerator, denominator, tokens

    def _grad_norm(self, scale: Tensor) -> Tensor:
        flat = ops.concat([g.reshape(-1) for g in self.grad_acc]) * scale
        return ops.sqrt((flat * flat).sum())

    def _apply(self, lr: Tensor, coef: Tensor) -> Tensor:
        return self.optimizer(self.grad_acc, lr, coef)

    def _sync_master(self) -> Tensor:
        return self.optimizer.sync_master()

    def zero_grad(self) -> None:
        """Discard the accumulated gradients: the next micro-batch overwrites the buffers."""
        self._accumulating = False

    # ---- Python driver ---------------------------------------------------------------------

    def forward_backward(self, batch: Dict[str, Tensor]) -> MicroResult:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        # mutable: a dict argument of a compiled function is otherwise a compile-time constant
        step = self.micro_step if self._accumulating else self.micro_step_first
        numerator, denominator, tokens = step(labels, mindspore.mutable(inputs))
        self._accumulating = True
        return MicroResult(float(numerator.asnumpy()), float(denominator.asnumpy()), int(tokens.asnumpy()))

    def update(self, lr: float, coef: float) -> None:
        """One optimizer step from the accumulated gradients times ``coef``; the buffers are
        overwritten by the next micro-batch."""
        self.apply(Tensor(lr, mindspore.float32), Tensor(coef, mindspore.float32))
        self._accumulating = False

    def first_nonfinite_grad(self) -> Optional[str]:
        """Name of the first parameter whose gradient holds a NaN or Inf (for the error message)."""
        for name, grad in zip(self.optimizer.names, self.grad_acc):
            if not np.isfinite(grad.asnumpy()).all():
                return name
        return None
