"""Fused float32 optimizer kernels over many tensors (``csrc/optim.cpp``), for ``msmm.train``.

:data:`AVAILABLE` is False when the library cannot be built or ``MSMM_FUSED_KERNELS=0``;
:func:`sum_squares` then concatenates the tensors and reduces with MindSpore kernels (on 10M
elements, 1 thread: 56 ms vs the kernel's 7; summing per tensor takes 101), and the optimizer
keeps MindSpore's ``AdamWeightDecay`` per parameter instead of :func:`adamw_`, and the
trainer's single-micro-batch step its in-graph guard instead of :func:`adamw_step_`.
"""
from __future__ import annotations

from typing import Sequence

import mindspore
from mindspore import Tensor, ops
from mindspore.ops import constexpr

from .build import library
from .custom import OPENMP, custom_op, scalar

# -fno-math-errno: sqrt in the AdamW loop vectorises (vsqrtps) instead of calling sqrtf per element
_LIBRARY = library("optim", (*OPENMP, "-fno-math-errno"))
AVAILABLE = _LIBRARY is not None


def _one_element(*shapes):
    return [1]


def _float32(*dtypes):
    return mindspore.float32


def _fused_sum_squares(tensors: Sequence[Tensor], scale: Tensor) -> Tensor:
    return _SUM_SQUARES(scale, *tensors)


def _composite_sum_squares(tensors: Sequence[Tensor], scale: Tensor) -> Tensor:
    flat = ops.concat([t.reshape(-1) for t in tensors]) * scale
    return (flat * flat).sum().reshape(1)


_SUM_SQUARES = custom_op(_LIBRARY, "SumSquares", _one_element, _float32) if AVAILABLE else None
_sum_squares = _fused_sum_squares if AVAILABLE else _composite_sum_squares


def sum_squares(tensors: Sequence[Tensor], scale: Tensor) -> Tensor:
    """``[1]``: ``sum_k sum((scale * t_k)^2)`` over float32 ``tensors``, one kernel (``scale``: [1]
    float32). Usable under ``mindspore.jit``."""
    if not tensors:
        return ops.zeros((1,), mindspore.float32)
    return _sum_squares(tensors, scale)


_ADAMW = custom_op(_LIBRARY, "AdamW", _one_element, _float32) if AVAILABLE else None


def interleave(params: Sequence[Tensor], exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor],
               grads: Sequence[Tensor]) -> list:
    """``[p_1, m_1, v_1, g_1, ..., p_N, m_N, v_N, g_N]``: the optimizer kernels' operands. Where
    all are Parameters (gradient buffers), build them once outside the graph, as a
    ``ParameterTuple``: a list grown inside a graph costs compile time and memory that grow
    with the square of N (the small config's update graph: 3.4 s and +110 MB)."""
    operands = []
    for k in range(len(params)):
        operands += [params[k], exp_avg[k], exp_avg_sq[k], grads[k]]
    return operands


def adamw_(operands: Sequence[Tensor], decay: Tensor, lr: Tensor, beta1: float, beta2: float, eps: Tensor,
           coef: Tensor) -> Tensor:
    """One AdamW update of every float32 parameter, in place, in one kernel (needs
    :data:`AVAILABLE`); ``operands`` as :func:`interleave` orders them; MindSpore's
    ``AdamWeightDecay`` arithmetic per element, with gradient ``g_k * coef`` and weight decay
    ``decay[k]``::

        m <- m + (g - m)(1 - beta1);  v <- v + (g^2 - v)(1 - beta2)
        p <- p - lr (m / (sqrt(v) + eps) + decay[k] p)

    Returns a [1] tensor for the caller to make its result depend on (``ops.depend``): MindSpore
    does not know the kernel writes its inputs, so call it only where it runs after every
    gradient is computed and nothing reads the parameters after it in the same graph."""
    hyper = ops.concat([lr.reshape(1), scalar(beta1), scalar(beta2), eps.reshape(1), coef.reshape(1)])
    return _ADAMW(hyper, decay, *operands)


def _two_elements(*shapes):
    return [2]


_ADAMW_STEP = custom_op(_LIBRARY, "AdamWStep", _two_elements, _float32) if AVAILABLE else None


@constexpr
def _constants(beta1: float, beta2: float, eps: float, weight_decay: float, clip: float) -> Tensor:
    return Tensor([beta1, beta2, eps, weight_decay, clip], mindspore.float32)


def adamw_step_(operands: Sequence[Tensor], decayed: Tensor, step: Tensor, lr: Tensor, numerator: Tensor,
                denominator: Tensor, beta1: float, beta2: float, eps: float, weight_decay: float,
                clip: float) -> Tensor:
    """A whole optimizer step from one micro-batch's float32 gradients of the loss ``numerator /
    denominator``, in one kernel (needs :data:`AVAILABLE`; ``operands`` as :func:`interleave`
    orders them). Returns ``[norm, finite]`` (float32 [2]): ``norm`` of the gradients of the
    mean loss, ``finite`` 1 when it and the mean loss are finite, else 0. Only if finite:
    ``step`` (int32 []) += 1 and one ``torch.optim.AdamW`` update of the parameters and moments,
    in place, from the gradients times ``min(1, clip / (norm + 1e-6))`` (``clip`` <= 0: no
    clipping), weight decay where ``decayed`` [N] is 1. The same in-place caveat as :func:`adamw_`."""
    return _ADAMW_STEP(_constants(beta1, beta2, eps, weight_decay, clip), lr, numerator.astype(mindspore.float32),
                       denominator.astype(mindspore.float32), step, decayed, *operands)
