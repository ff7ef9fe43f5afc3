"""AdamW with decoupled weight decay: one kernel for every float32 parameter
(``adapters.kernels.optim.adamw_``, in place), else one ``AdamWeightDecay`` kernel per parameter.

State is per parameter (first and second moments, fp32), updated in place by MindSpore's
``AdamWeightDecay`` kernel (``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
``p <- p - lr' (m / (sqrt(v) + eps') + wd' p)``), whose scalar inputs are chosen so that
the result is ``torch.optim.AdamW``'s:

    p <- p * (1 - lr * wd)
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

i.e. with ``bc1 = 1 - beta1^t`` and ``s2 = sqrt(1 - beta2^t)``: ``lr' = lr s2 / bc1``,
``eps' = eps s2``, ``wd' = wd bc1 / s2`` (the same arithmetic, rounded differently). One
kernel per parameter replaces the flat-buffer version's split / reshape / assign chain,
which cost more than the update itself on CPU. bf16 / fp16 parameters (Ascend) keep an
fp32 master that the kernel updates and that is cast into the parameter. When every parameter
is float32 and the fused CPU kernels are built, one C++ kernel does the same arithmetic for all
of them, the ``coef`` scaling included (small config, 1 thread: 53 -> 12 ms per update).

Parameter groups follow Megatron's default: biases and 1-D parameters (norm weights) take
no weight decay.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from adapters.kernels import optim as fused


def no_weight_decay(name: str, param: Parameter) -> bool:
    """Megatron's default group rule: biases and 1-D parameters (norms) are not decayed."""
    return name.endswith(".bias") or len(param.shape) == 1


class AdamWBase(nn.Cell):
    """What AdamW and the distributed AdamW share: the trained parameters in order (``names``,
    ``params``, their ``sizes`` and ``shapes``) and the hyper-parameters."""

    def __init__(self, named_params: Sequence[Tuple[str, Parameter]], weight_decay: float = 0.0,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, allow_empty: bool = False) -> None:
        """``allow_empty``: a pipeline stage may hold only frozen modules (then the step only counts)."""
        super().__init__(auto_prefix=False)
        if not named_params and not allow_empty:
            raise ValueError("the optimizer got no trainable parameters (is every module frozen?)")
        self.names = [n for n, _ in named_params]
        self.params = mindspore.ParameterTuple([p for _, p in named_params])
        self.sizes = tuple(int(np.prod(p.shape)) for p in self.params)
        self.shapes = tuple(tuple(p.shape) for p in self.params)
        self.weight_decay = float(weight_decay)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)


class AdamW(AdamWBase):
    """``construct(grads, lr, coef)`` takes one update from the fp32 gradients ``grads``
    (one per parameter, in ``names`` order) scaled by ``coef``."""

    def __init__(
        self,
        named_params: Sequence[Tuple[str, Parameter]],
        weight_decay: float = 0.0,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        allow_empty: bool = False,
    ) -> None:
        super().__init__(named_params, weight_decay, betas, eps, allow_empty)
        self.decayed = tuple(not no_weight_decay(n, p) for n, p in named_params)
        # index into ``masters`` of each parameter that keeps an fp32 master, else -1
        low = [k for k, p in enumerate(self.params) if p.dtype != mindspore.float32]
        self.master_of = tuple(low.index(k) if k in low else -1 for k in range(len(self.params)))
        self.masters = mindspore.ParameterTuple([
            Parameter(ops.zeros(self.shapes[k], mindspore.float32), name=f"master.{self.names[k]}", requires_grad=False)
            for k in low])
        self.exp_avg = mindspore.ParameterTuple([
            Parameter(ops.zeros(shape, mindspore.float32), name=f"exp_avg.{name}", requires_grad=False)
            for name, shape in zip(self.names, self.shapes)])
        self.exp_avg_sq = mindspore.ParameterTuple([
            Parameter(ops.zeros(shape, mindspore.float32), name=f"exp_avg_sq.{name}", requires_grad=False)
            for name, shape in zip(self.names, self.shapes)])
        self.step = Parameter(Tensor(0, mindspore.int32), name="step", requires_grad=False)
        self.adam = ops.AdamWeightDecay()
        # one in-place kernel for all parameters: float32 ones only (no masters), on CPU
        self.fused = (fused.AVAILABLE and bool(self.names) and not low
                      and mindspore.get_context("device_target") == "CPU")
        self.decay_mask = Tensor(np.array(self.decayed, np.float32))

    def sync_master(self) -> Tensor:
        """fp32 masters <- the parameters' current values (call it in a graph after loading weights)."""
        for k in range(len(self.params)):
            if self.master_of[k] >= 0:
                ops.assign(self.masters[self.master_of[k]], self.params[k].astype(mindspore.float32))
        return self.step

    def construct(self, grads: Tuple[Tensor, ...], lr: Tensor, coef: Tensor) -> Tensor:
        if self.fused:
            return self.update(self.operands(grads), lr, coef)
        step, kernel_lr, kernel_eps, kernel_decay = self._corrected(lr)
        ops.assign(self.step, step)
        no_decay = kernel_decay * 0.0
        for k in range(len(self.params)):
            target = self.params[k] if self.master_of[k] < 0 else self.masters[self.master_of[k]]
            self.adam(target, self.exp_avg[k], self.exp_avg_sq[k], kernel_lr, self.beta1, self.beta2, kernel_eps,
                      kernel_decay if self.decayed[k] else no_decay, grads[k] * coef)
            if self.master_of[k] >= 0:
                ops.assign(self.params[k], target.astype(self.params[k].dtype))
        return step

    def _corrected(self, lr: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(next step count, lr, eps, weight decay) with the bias corrections folded in."""
        step = self.step + 1
        t = step.astype(mindspore.float32)
        bias_correction1 = 1.0 - ops.pow(self.beta1, t)
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, t))
        return (step, lr * bias_correction2_sqrt / bias_correction1, self.eps * bias_correction2_sqrt,
                self.weight_decay * bias_correction1 / bias_correction2_sqrt)

    def operands(self, grads: Sequence[Tensor]) -> list:
        """The fused kernels' operands: each parameter, its moments and ``grads``' entry
        (``fused.interleave``). Over gradient buffers, build them once outside the graph and
        wrap them in a ``ParameterTuple`` (a list built in a graph compiles slowly)."""
        return fused.interleave(self.params, self.exp_avg, self.exp_avg_sq, grads)

    def update(self, operands: Sequence[Tensor], lr: Tensor, coef: Tensor) -> Tensor:
        """The fused update (``self.fused`` only) from ``operands`` (``fused.interleave``'s order);
        the step count's assign depends on the in-place kernel: that keeps it in the graph."""
        step, kernel_lr, kernel_eps, kernel_decay = self._corrected(lr)
        done = fused.adamw_(operands, self.decay_mask * kernel_decay, kernel_lr, self.beta1, self.beta2, kernel_eps,
                            coef)
        ops.assign(self.step, ops.depend(step, done))
        return step

    def fused_step(self, operands: Sequence[Tensor], lr: Tensor, numerator: Tensor, denominator: Tensor,
                   clip: float) -> Tensor:
        """A whole step from one micro-batch's gradients of ``numerator / denominator`` in one
        kernel (``self.fused`` only; ``adapters.kernels.optim.adamw_step_``; ``operands`` in
        ``fused.interleave``'s order): ``[norm, finite]``; clipped to ``clip`` and applied only if
        finite."""
        return fused.adamw_step_(operands, self.decay_mask, self.step, lr, numerator, denominator, self.beta1,
                                 self.beta2, self.eps, self.weight_decay, clip)

    # ---- state ----------------------------------------------------------------------------

    def state_arrays(self, with_master: bool) -> Dict[str, np.ndarray]:
        """Step count and, per parameter name, the moments (and the fp32 master if asked)."""
        out: Dict[str, np.ndarray] = {"optimizer.step": np.asarray(self.step.asnumpy()).reshape(1)}
        for k, name in enumerate(self.names):
            out[f"optimizer.exp_avg.{name}"] = self.exp_avg[k].asnumpy()
            out[f"optimizer.exp_avg_sq.{name}"] = self.exp_avg_sq[k].asnumpy()
            if with_master:
                master = self.params[k] if self.master_of[k] < 0 else self.masters[self.master_of[k]]
                out[f"optimizer.master.{name}"] = master.asnumpy().astype(np.float32)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], where: str) -> None:
        """Copy saved state in place (graphs compiled before see it). A master, if saved,
        replaces the one taken from the parameters. Missing or mis-shaped keys are errors."""
        def get(kind: str, k: int) -> Tensor:
            key = f"optimizer.{kind}.{self.names[k]}"
            if key not in arrays:
                raise KeyError(f"{where}: optimizer state {key!r} is missing (saved with --no-save-optim, "
                               "or with other frozen modules? then load with --no-load-optim)")
            if tuple(arrays[key].shape) != self.shapes[k]:
                raise ValueError(f"{where}: {key} has shape {tuple(arrays[key].shape)}, expected {self.shapes[k]}")
            return Tensor(arrays[key].astype(np.float32))

        if "optimizer.step" not in arrays:
            raise KeyError(f"{where}: optimizer state 'optimizer.step' is missing (load with --no-load-optim)")
        values = [(get("exp_avg", k), get("exp_avg_sq", k)) for k in range(len(self.names))]  # check all first
        for k, (m, v) in enumerate(values):
            self.exp_avg[k].copy_(m)
            self.exp_avg_sq[k].copy_(v)
        if self.names and f"optimizer.master.{self.names[0]}" in arrays:
            for k in range(len(self.names)):
                if self.master_of[k] >= 0:
                    self.masters[self.master_of[k]].copy_(get("master", k))
        self.step.copy_(Tensor(np.asarray(arrays["optimizer.step"], np.int32).reshape(())))
