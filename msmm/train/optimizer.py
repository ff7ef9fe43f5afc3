"""AdamW with decoupled weight decay, as MindSpore ops with in-graph assignment.

The optimizer keeps its state flat: fp32 master weights, first and second moments and the
per-element weight-decay rate are each one vector over all trainable parameters (in
``names`` order), so an update is a handful of large element-wise ops instead of a dozen
small ones per parameter (which also keeps graph compilation short). After the update the
master is split and written into the model's parameters with ``ops.assign`` (cast to their
dtype: bf16/fp16 parameters on Ascend keep fp32 masters), so every compiled graph sees the
new values. The arithmetic is ``torch.optim.AdamW``'s:

    p <- p * (1 - lr * wd)
    m <- beta1 m + (1 - beta1) g          v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Parameter groups follow Megatron's default: biases and 1-D parameters (norm weights) take
no weight decay.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops


def no_weight_decay(name: str, param: Parameter) -> bool:
    """Megatron's default group rule: biases and 1-D parameters (norms) are not decayed."""
    return name.endswith(".bias") or len(param.shape) == 1


class AdamW(nn.Cell):
    """``construct(grad, lr)`` takes one update from the flat fp32 gradient ``grad`` [N]."""

    def __init__(
        self,
        named_params: Sequence[Tuple[str, Parameter]],
        weight_decay: float = 0.0,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(auto_prefix=False)
        if not named_params:
            raise ValueError("the optimizer got no trainable parameters (is every module frozen?)")
        self.names = [n for n, _ in named_params]
        self.params = mindspore.ParameterTuple([p for _, p in named_params])
        self.sizes = tuple(int(np.prod(p.shape)) for p in self.params)
        self.shapes = tuple(tuple(p.shape) for p in self.params)
        # the write-back splits in two levels: ops.split's size list costs one graph call level
        # per entry, and a flat list of a few hundred parameters exceeds the call-depth limit
        self.groups = tuple(self.sizes[i:i + 32] for i in range(0, len(self.sizes), 32))
        self.group_sizes = tuple(sum(g) for g in self.groups)
        self.group_starts = tuple(range(0, len(self.sizes), 32))
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        total = sum(self.sizes)
        decay = np.concatenate([
            np.full(size, 0.0 if no_weight_decay(n, p) else weight_decay, np.float32)
            for (n, p), size in zip(named_params, self.sizes)
        ])
        self.decay = Parameter(Tensor(decay), name="weight_decay", requires_grad=False)
        self.master = Parameter(ops.zeros(total, mindspore.float32), name="master", requires_grad=False)
        self.exp_avg = Parameter(ops.zeros(total, mindspore.float32), name="exp_avg", requires_grad=False)
        self.exp_avg_sq = Parameter(ops.zeros(total, mindspore.float32), name="exp_avg_sq", requires_grad=False)
        self.step = Parameter(Tensor(0, mindspore.int32), name="step", requires_grad=False)

    def sync_master(self) -> Tensor:
        """master <- the parameters' current values (call it in a graph after loading weights)."""
        flat = ops.concat([p.reshape(-1).astype(mindspore.float32) for p in self.params])
        ops.assign(self.master, flat)
        return self.step

    def construct(self, grad: Tensor, lr: Tensor) -> Tensor:
        step = self.step + 1
        ops.assign(self.step, step)
        t = step.astype(mindspore.float32)
        bias_correction1 = 1.0 - ops.pow(self.beta1, t)
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, t))
        m = self.exp_avg * self.beta1 + grad * (1.0 - self.beta1)
        v = self.exp_avg_sq * self.beta2 + grad * grad * (1.0 - self.beta2)
        ops.assign(self.exp_avg, m)
        ops.assign(self.exp_avg_sq, v)
        p = self.master * (1.0 - lr * self.decay)
        p = p - (lr / bias_correction1) * m / (ops.sqrt(v) / bias_correction2_sqrt + self.eps)
        ops.assign(self.master, p)
        chunks = ops.split(p, self.group_sizes)
        for g in range(len(self.groups)):
            pieces = ops.split(chunks[g], self.groups[g])
            for j in range(len(self.groups[g])):
                k = self.group_starts[g] + j
                ops.assign(self.params[k], pieces[j].reshape(self.shapes[k]).astype(self.params[k].dtype))
        return step

    # ---- state ----------------------------------------------------------------------------

    def state_arrays(self, with_master: bool) -> Dict[str, np.ndarray]:
        """Step count and, per parameter name, the moments (and the fp32 master if asked)."""
        out: Dict[str, np.ndarray] = {"optimizer.step": np.asarray(self.step.asnumpy()).reshape(1)}
        buffers = [("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)] + ([("master", self.master)] if with_master else [])
        for kind, flat in buffers:
            values = flat.asnumpy()
            start = 0
            for name, size, shape in zip(self.names, self.sizes, self.shapes):
                out[f"optimizer.{kind}.{name}"] = values[start:start + size].reshape(shape)
                start += size
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], where: str) -> None:
        """Copy saved state in place (graphs compiled before see it). A master, if saved,
        replaces the one taken from the parameters. Missing or mis-shaped keys are errors."""
        def gather(kind: str) -> np.ndarray:
            parts = []
            for name, shape in zip(self.names, self.shapes):
                key = f"optimizer.{kind}.{name}"
                if key not in arrays:
                    raise KeyError(f"{where}: optimizer state {key!r} is missing (saved with --no-save-optim, "
                                   "or with other frozen modules? then load with --no-load-optim)")
                if tuple(arrays[key].shape) != shape:
                    raise ValueError(f"{where}: {key} has shape {tuple(arrays[key].shape)}, expected {shape}")
                parts.append(arrays[key].astype(np.float32).reshape(-1))
            return np.concatenate(parts)

        if "optimizer.step" not in arrays:
            raise KeyError(f"{where}: optimizer state 'optimizer.step' is missing (load with --no-load-optim)")
        self.exp_avg.copy_(Tensor(gather("exp_avg")))
        self.exp_avg_sq.copy_(Tensor(gather("exp_avg_sq")))
        if f"optimizer.master.{self.names[0]}" in arrays:
            self.master.copy_(Tensor(gather("master")))
        self.step.copy_(Tensor(np.asarray(arrays["optimizer.step"], np.int32).reshape(())))
