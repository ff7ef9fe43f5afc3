"""The compiled training step: gradient accumulation, clipping, AdamW.

With one micro-batch per step on one rank and ``MSMM_ONE_GRAPH_STEP=1`` (``one_graph``, set
by the trainer), the whole step is one graph, ``whole_step(labels, inputs, lr)``: forward +
backward, then one kernel (``AdamW.fused_step``) that takes the gradient norm, skips the update
when the loss or the norm is not finite (parameters, moments and step count stay as they were),
clips and applies AdamW; without the fused kernels the norm is one ``SumSquares`` kernel and an
in-graph ``if`` guards the update. The gradients go straight from the backward into the update,
never into the buffers below. It is opt-in: compiling the backward with its gradients as
values costs more memory than with each written to its buffer (tiny: +240 MB peak).

Otherwise (``mindspore.jit``, AST capture, each compiled once per input shape):

* ``micro_step(labels, **inputs)``: forward + backward of one micro-batch over the
  trainable parameters only (``value_and_grad`` with ``weights=``; frozen parameters get no
  gradient), each gradient written (first micro-batch of a step: ``ops.assign``, so no
  zeroing pass is needed) or added (``ops.assign_add``) in-graph into its fp32 buffer;
* ``grad_sumsq(scale)``: the squared L2 norms of the (scaled) accumulated gradients, of
  tensor-parallel shards and of the rest (the trainer sums the first over the ranks), one
  ``SumSquares`` kernel each (``adapters.kernels.optim``);
* ``apply(lr, coef)``: one AdamW update from the gradients times ``coef`` (coef = 1/denominator
  times the clip factor);
* or, on one rank with the fused optimizer (``fused_update``), instead of the last two:
  ``update_fused(lr, numerator, denominator)``, the same one kernel as ``whole_step``'s over the
  buffers (norm, guard, clip, AdamW), so no norm graph and no host round trip between them.

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
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from adapters.kernels.optim import sum_squares
from msmm import runtime

from .loss import REDUCTIONS, VocabParallelCrossEntropy, micro_batch_loss
from .distributed_optimizer import DistributedAdamW
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


@dataclass
class StepResult(MicroResult):
    grad_norm: float  # of the gradients of the mean loss (numerator / denominator)
    applied: bool  # False: the loss or the norm was not finite, the update was skipped


class TrainStep(nn.Cell):
    """Owns the gradient buffer and the compiled graphs for ``model`` and ``optimizer``."""

    def __init__(self, model: nn.Cell, optimizer: AdamW, reduction: str = "micro_batch",
                 clip_grad: float = 0.0, vocab_parallel: Optional[VocabParallelCrossEntropy] = None,
                 sharded: Optional[Sequence[bool]] = None, context_parallel: int = 1) -> None:
        """``context_parallel``: the ranks sharing each sequence; a batch then holds this rank's
        tokens with their labels already shifted, and ``label_counts`` [B] (``InputBuilder``)."""
        super().__init__(auto_prefix=False)
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model, self.optimizer = model, optimizer
        self.reduction, self.clip_grad = reduction, float(clip_grad)
        self.weights = optimizer.params
        self.vocab_parallel = vocab_parallel  # the loss over vocab-parallel logits (tensor parallel), or None
        self.context_parallel = context_parallel
        self.distributed = isinstance(optimizer, DistributedAdamW)  # its state sharded over the data-parallel ranks
        # which gradients are shards of a tensor-parallel parameter (their squares are summed over the ranks)
        self.sharded = tuple(sharded) if sharded is not None else (False,) * len(self.weights)
        self.grad_acc = mindspore.ParameterTuple([
            Parameter(ops.zeros(p.shape, mindspore.float32), name=f"grad_acc.{name}", requires_grad=False)
            for name, p in zip(optimizer.names, self.weights)])
        self._accumulating = False  # False: the next micro-batch overwrites the buffers
        # Built here, not in the graphs (a list grown in a graph compiles in time and memory
        # quadratic in its length): the buffers of tensor-parallel shards and of the rest, and
        # the fused optimizer's (parameter, moments, buffer) operands
        self.grad_parts = tuple(mindspore.ParameterTuple([g for g, split in zip(self.grad_acc, self.sharded) if split == part])
                                for part in (True, False))
        self.operands = (mindspore.ParameterTuple(optimizer.operands(self.grad_acc))
                         if getattr(optimizer, "fused", False) else None)
        self._grad_fn = mindspore.value_and_grad(self._loss, None, self.weights, has_aux=True)
        self.one_graph = False  # the trainer sets it when a step is one micro-batch on one rank
        self._last_batch: Optional[Dict[str, Tensor]] = None  # of whole_step, to name a non-finite gradient
        self.whole_step = runtime.jit(self._whole_step)
        self.micro_step_first = runtime.jit(self._micro_step_first)
        self.micro_step = runtime.jit(self._micro_step)
        self.grad_sumsq = runtime.jit(self._grad_sumsq)
        self.reduce_scatter_grads = runtime.jit(self._reduce_scatter_grads)
        self.apply = runtime.jit(self._apply)
        # norm, guard, clip and update in one kernel over the buffers (one rank, fp32 on CPU)
        self.fused_update = self.operands is not None and not self.distributed and not any(self.sharded)
        self.update_fused = runtime.jit(self._update_fused)
        self.sync_master = runtime.jit(self._sync_master)
        self.sync_master()

    def _loss(self, labels: Tensor, inputs: Dict[str, Tensor]):
        logits = self.model(**inputs)
        counts = None
        if self.context_parallel > 1:  # (this rank's shifted labels, each row's counted tokens)
            labels, counts = labels
        return micro_batch_loss(logits, labels, self.reduction, self.vocab_parallel, counts,
                                1.0 / self.context_parallel)

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

    def _whole_step(self, labels: Tensor, inputs: Dict[str, Tensor], lr: Tensor):
        (numerator, denominator, tokens), grads = self._grad_fn(labels, inputs)
        grads = tuple(g if g.dtype == mindspore.float32 else g.astype(mindspore.float32) for g in grads)
        if self.optimizer.fused:  # norm, guard, clip and AdamW in one kernel: no control flow
            norm_finite = self.optimizer.fused_step(self.optimizer.operands(grads), lr, numerator, denominator,
                                                    self.clip_grad)
            return numerator, denominator, tokens, norm_finite[0], norm_finite[1] > 0.5
        scale = 1.0 / ops.maximum(denominator.astype(mindspore.float32), 1e-12)
        norm = ops.sqrt(sum_squares(grads, scale.reshape(1))).reshape(())
        finite = ops.logical_and(ops.isfinite(norm), ops.isfinite(numerator * scale))
        coef = scale
        if self.clip_grad > 0:
            coef = scale * ops.minimum(self.clip_grad / (norm + 1e-6), 1.0)
        if finite:
            self.optimizer(grads, lr, coef)
        return numerator, denominator, tokens, norm, finite

    def _reduce_scatter_grads(self) -> Tensor:
        return self.optimizer.reduce_scatter_grads(self.grad_acc)

    def _grad_sumsq(self, scale: Tensor) -> Tensor:
        """[2]: the sums of squares of the (scaled) accumulated gradients that are shards of
        tensor-parallel parameters, and of the others. The global norm is the square root of
        the first summed over the tensor-parallel ranks plus the second."""
        if self.distributed:  # this rank's range of the reduced gradients
            return self.optimizer.grad_sumsq(scale)
        return ops.concat([sum_squares(part, scale.reshape(1)) for part in self.grad_parts])

    def grad_norm(self, scale: float, sum_over_tensor_parallel: Optional[Callable[[Tensor], Tensor]] = None,
                  sum_over_data_parallel: Optional[Callable[[Tensor], Tensor]] = None,
                  sum_over_pipeline: Optional[Callable[[Tensor], Tensor]] = None) -> float:
        """The global L2 norm of the accumulated gradients times ``scale``; the squares of
        sharded gradients go through ``sum_over_tensor_parallel`` (the all-reduce over the
        tensor-parallel group), and with the distributed optimizer (each rank holding its
        range of the gradients) all go through ``sum_over_data_parallel`` first; with pipeline
        stages (each holding its own parameters) the total goes through ``sum_over_pipeline``."""
        sums = self.grad_sumsq(Tensor(scale, mindspore.float32))
        if self.distributed and sum_over_data_parallel is not None:
            sums = sum_over_data_parallel(sums)
        sharded = sums[0:1] if sum_over_tensor_parallel is None else sum_over_tensor_parallel(sums[0:1])
        total = float(sharded.asnumpy()[0]) + float(sums.asnumpy()[1])
        if sum_over_pipeline is not None:
            total = float(sum_over_pipeline(Tensor(np.array([total], np.float32))).asnumpy()[0])
        return math.sqrt(total)

    def _apply(self, lr: Tensor, coef: Tensor) -> Tensor:
        if self.distributed:  # from its range of the reduced gradients
            return self.optimizer(lr, coef)
        if self.operands is not None:
            return self.optimizer.update(self.operands, lr, coef)
        return self.optimizer(self.grad_acc, lr, coef)

    def _update_fused(self, lr: Tensor, numerator: Tensor, denominator: Tensor) -> Tensor:
        return self.optimizer.fused_step(self.operands, lr, numerator, denominator, self.clip_grad)

    def _sync_master(self) -> Tensor:
        return self.optimizer.sync_master()

    def zero_grad(self) -> None:
        """Discard the accumulated gradients: the next micro-batch overwrites the buffers."""
        self._accumulating = False

    # ---- Python driver ---------------------------------------------------------------------

    def forward_backward(self, batch: Dict[str, Tensor]) -> MicroResult:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        if self.context_parallel > 1:  # mutable: a tuple argument would be a compile-time constant
            labels = mindspore.mutable((labels, inputs.pop("label_counts")))
        # mutable: a dict argument of a compiled function is otherwise a compile-time constant
        step = self.micro_step if self._accumulating else self.micro_step_first
        numerator, denominator, tokens = step(labels, mindspore.mutable(inputs))
        self._accumulating = True
        return MicroResult(float(numerator.asnumpy()), float(denominator.asnumpy()), int(tokens.asnumpy()))

    def step(self, batch: Dict[str, Tensor], lr: float) -> StepResult:
        """The whole step on one micro-batch (``one_graph``): forward, backward, clip, AdamW at
        ``lr``, skipped in-graph if the loss or the gradient norm is not finite."""
        inputs = dict(batch)
        labels = inputs.pop("labels")
        numerator, denominator, tokens, norm, finite = self.whole_step(
            labels, mindspore.mutable(inputs), Tensor(lr, mindspore.float32))
        self._last_batch = batch
        return StepResult(float(numerator.asnumpy()), float(denominator.asnumpy()), int(tokens.asnumpy()),
                          float(norm.asnumpy()), bool(finite.asnumpy()))

    def update(self, lr: float, coef: float) -> None:
        """One optimizer step from the accumulated gradients times ``coef``; the buffers are
        overwritten by the next micro-batch."""
        self.apply(Tensor(lr, mindspore.float32), Tensor(coef, mindspore.float32))
        self._accumulating = False

    def update_from_loss(self, lr: float, numerator: float, denominator: float) -> Tuple[float, bool]:
        """(gradient norm, finite): one optimizer step from the accumulated gradients of the loss
        ``numerator / denominator`` (``fused_update`` only), clipped, skipped if not finite."""
        out = self.update_fused(Tensor(lr, mindspore.float32), Tensor(numerator, mindspore.float32),
                                Tensor(denominator, mindspore.float32)).asnumpy()
        self._accumulating = False
        return float(out[0]), bool(out[1] > 0.5)

    def first_nonfinite_grad(self) -> Optional[str]:
        """Name of the first parameter whose gradient holds a NaN or Inf (for the error message).
        After ``step`` (whose gradients are not kept) the micro-batch's gradients are computed
        again into the buffers: the skipped update left the parameters as they were."""
        if self.one_graph and self._last_batch is not None:
            self.zero_grad()
            self.forward_backward(self._last_batch)
            self.zero_grad()
        for name, grad in zip(self.optimizer.names, self.grad_acc):
            if not np.isfinite(grad.asnumpy()).all():
                return name
        return None
