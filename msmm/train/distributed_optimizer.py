"""The distributed optimizer (``--use-distributed-optimizer``, ZeRO stage 1 as in Megatron):
the fp32 master weights and the two Adam moments are sharded across the data-parallel ranks.

The trainable parameters are laid end to end in one flat space of ``N`` elements, padded to
a multiple of the data-parallel size ``D``; rank ``r`` owns elements ``[r N/D, (r+1) N/D)``
and keeps optimizer state for those only (``3 N / D`` floats instead of ``3 N``). A step:

1. ``reduce_scatter_grads``: the accumulated gradients, flattened, are summed over the
   data-parallel ranks and each rank keeps its range (a reduce-scatter; on CPU, where
   MindSpore has no ReduceScatter kernel, an all-reduce and the rank's slice: the same sums);
2. ``grad_sumsq``: squared norms of the rank's range (the trainer sums them over the ranks);
3. ``construct``: AdamW (torch's arithmetic, elementwise) on the rank's range of the master
   weights, then every rank's updated range is gathered (an all-gather; on CPU an all-reduce
   of zero-padded ranges, exact) and written into the parameters.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, ops

from .optimizer import AdamWBase, no_weight_decay


class DistributedAdamW(AdamWBase):
    """AdamW over this data-parallel rank's range of the flattened trainable parameters."""

    def __init__(self, named_params: Sequence[Tuple[str, Parameter]], dp_rank: int, dp_size: int, group: str,
                 weight_decay: float = 0.0, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 sharded: Optional[Sequence[bool]] = None) -> None:
        super().__init__(named_params, weight_decay, betas, eps)
        total = sum(self.sizes)
        self.shard = -(-total // dp_size)
        self.padding = self.shard * dp_size - total
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.begin = dp_rank * self.shard
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM, group)
        decay, tp_sharded = np.zeros(total + self.padding, np.float32), np.zeros(total + self.padding, np.float32)
        flags = tuple(sharded) if sharded is not None else (False,) * len(self.sizes)
        offset = 0
        for (name, p), size, is_sharded in zip(named_params, self.sizes, flags):
            decay[offset:offset + size] = 0.0 if no_weight_decay(name, p) else 1.0
            tp_sharded[offset:offset + size] = float(is_sharded)
            offset += size
        mine = slice(self.begin, self.begin + self.shard)
        self.decay = Tensor(decay[mine])  # 1 where weight decay applies
        self.tp_sharded = Tensor(tp_sharded[mine])  # 1 where the element belongs to a tensor-parallel shard
        flat = np.concatenate([p.asnumpy().astype(np.float32).reshape(-1) for p in self.params]
                              + [np.zeros(self.padding, np.float32)])
        self.master = Parameter(Tensor(flat[mine]), name="master", requires_grad=False)
        self.exp_avg = Parameter(ops.zeros(self.shard, mindspore.float32), name="exp_avg", requires_grad=False)
        self.exp_avg_sq = Parameter(ops.zeros(self.shard, mindspore.float32), name="exp_avg_sq", requires_grad=False)
        self.grad = Parameter(ops.zeros(self.shard, mindspore.float32), name="grad_shard", requires_grad=False)
        self.step = Parameter(Tensor(0, mindspore.int32), name="step", requires_grad=False)
        slot = np.zeros((dp_size, 1), np.float32)
        slot[dp_rank] = 1.0
        self.slot = Tensor(slot)  # places this rank's range in a zero-padded [D, N/D] block

    def _flat(self, tensors) -> Tensor:
        parts = [t.astype(mindspore.float32).reshape(-1) for t in tensors]
        if self.padding:
            parts.append(ops.zeros(self.padding, mindspore.float32))
        return ops.concat(parts)

    def reduce_scatter_grads(self, grads: Tuple[Tensor, ...]) -> Tensor:
        """This rank's range of the data-parallel sum of ``grads`` (one per parameter) into ``grad``."""
        summed = self.all_reduce(self._flat(grads))
        ops.assign(self.grad, summed[self.begin:self.begin + self.shard])
        return self.step

    def grad_sumsq(self, scale: Tensor) -> Tensor:
        """[2]: squares of this rank's range of the scaled gradients, of tensor-parallel shards and
        of the rest (to be summed over the data-parallel ranks, the first also over the TP ranks)."""
        squares = (self.grad * scale) * (self.grad * scale)
        sharded = (squares * self.tp_sharded).sum()
        return ops.concat([sharded.reshape(1), (squares.sum() - sharded).reshape(1)])

    def sync_master(self) -> Tensor:
        """Master range <- the parameters' current values (after loading weights)."""
        ops.assign(self.master, self._flat(self.params)[self.begin:self.begin + self.shard])
        return self.step

    def construct(self, lr: Tensor, coef: Tensor) -> Tensor:
        step = self.step + 1
        ops.assign(self.step, step)
        t = step.astype(mindspore.float32)
        bias_correction1 = 1.0 - ops.pow(self.beta1, t)
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, t))
        grad = self.grad * coef
        exp_avg = self.beta1 * self.exp_avg + (1.0 - self.beta1) * grad
        exp_avg_sq = self.beta2 * self.exp_avg_sq + (1.0 - self.beta2) * grad * grad
        master = self.master * (1.0 - lr * self.weight_decay * self.decay)
        master = master - (lr / bias_correction1) * exp_avg / (ops.sqrt(exp_avg_sq) / bias_correction2_sqrt + self.eps)
        ops.assign(self.exp_avg, exp_avg)
        ops.assign(self.exp_avg_sq, exp_avg_sq)
        ops.assign(self.master, master)
        gathered = self.all_reduce(self.slot * master.reshape(1, -1)).reshape(-1)  # every rank's range
        offset = 0
        for k in range(len(self.sizes)):
            piece = gathered[offset:offset + self.sizes[k]].reshape(self.shapes[k])
            ops.assign(self.params[k], piece.astype(self.params[k].dtype))
            offset += self.sizes[k]
        return step

    # ---- state: this rank's range ----------------------------------------------------------

    def state_arrays(self, with_master: bool = True) -> Dict[str, np.ndarray]:
        """This rank's optimizer state; the master range is always kept (it is the fp32 copy)."""
        return {"optimizer.step": np.asarray(self.step.asnumpy()).reshape(1),
                "optimizer.shard.exp_avg": self.exp_avg.asnumpy(), "optimizer.shard.exp_avg_sq": self.exp_avg_sq.asnumpy(),
                "optimizer.shard.master": self.master.asnumpy(),
                "optimizer.shard.layout": np.array([self.dp_rank, self.dp_size, self.shard], np.int64)}

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], where: str) -> None:
        layout = arrays.get("optimizer.shard.layout")
        if layout is None:
            raise KeyError(f"{where}: holds no distributed-optimizer state (saved without "
                           "--use-distributed-optimizer); load it with --no-load-optim, or without the flag")
        rank, size, shard = (int(v) for v in layout)
        if (rank, size, shard) != (self.dp_rank, self.dp_size, self.shard):
            raise ValueError(f"{where}: distributed-optimizer state of data-parallel rank {rank} of {size} "
                             f"({shard} elements), this rank is {self.dp_rank} of {self.dp_size} ({self.shard}): "
                             "resume with the same layout, or with --no-load-optim")
        for name in ("exp_avg", "exp_avg_sq", "master"):
            getattr(self, name).copy_(Tensor(arrays[f"optimizer.shard.{name}"].astype(np.float32)))
        self.step.copy_(Tensor(np.asarray(arrays["optimizer.step"], np.int32).reshape(())))
