"""Megatron-style linear layers; weights are stored [out, in] like torch.nn.Linear and HF.

Tensor parallelism shards ColumnParallelLinear along ``out`` and RowParallelLinear along
``in``. The collectives that go with the shards (identity-forward/all-reduce-backward
before a column layer, all-reduce after a row layer) arrive with the parallel issue; until
then only ``tp_size=1`` is accepted, so a model built here is already shaped for TP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_tp(tp_size: int, dim: int, what: str) -> int:
    if tp_size != 1:
        raise NotImplementedError(
            f"tensor_model_parallel_size={tp_size}: only 1 is supported until the "
            f"tensor-parallel collectives land"
        )
    if dim % tp_size:
        raise ValueError(f"{what} ({dim}) is not divisible by tensor_model_parallel_size ({tp_size})")
    return dim // tp_size


class _ParallelLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, init_std: float) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ColumnParallelLinear(_ParallelLinear):
    """y = x W^T + b with W split by rows (output features) across ``tp_size`` ranks."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, tp_size: int = 1, init_std: float = 0.02
    ) -> None:
        super().__init__(in_features, _check_tp(tp_size, out_features, "out_features"), bias, init_std)
        self.tp_size = tp_size


class RowParallelLinear(_ParallelLinear):
    """y = x W^T + b with W split by columns (input features) across ``tp_size`` ranks."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, tp_size: int = 1, init_std: float = 0.02
    ) -> None:
        super().__init__(_check_tp(tp_size, in_features, "in_features"), out_features, bias, init_std)
        self.tp_size = tp_size
