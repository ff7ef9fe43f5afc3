"""Megatron-style linear layers; weights are stored [out, in] like torch.nn.Linear and HF.

With tensor parallelism (``tensor_parallel.initialize_tensor_parallel``) a
``ColumnParallelLinear`` holds this rank's rows of the weight (output features; its input
passes ``copy_to_tensor_parallel_region``) and a ``RowParallelLinear`` its columns (input
features; the partial outputs are summed by ``reduce_from_tensor_parallel_region``, then the
unsplit bias is added). With ``sequence_parallel`` (Megatron's) the input of a column-parallel
layer arrives split along the sequence and is all-gathered (``gather_from_sequence_parallel_region``)
and the output of a row-parallel layer is reduce-scattered back into the sequence split
(``reduce_scatter_to_sequence_parallel_region``); the row-parallel bias then sees this rank's
tokens only, and its gradient is summed over the ranks by the trainer. Shards are taken as mm-convert takes them (``msmm.checkpoint.parallel``:
contiguous chunks; a fused q/k/v weight [q; k; v] by chunks of each part), and the full
weight is initialised first and then sharded, so a model draws the same numbers at any
tensor-parallel size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tensor_parallel import (copy_to_tensor_parallel_region, divide, gather_from_sequence_parallel_region,
                              reduce_from_tensor_parallel_region, reduce_scatter_to_sequence_parallel_region,
                              shard_rows, tensor_parallel_size)


def _init_full(out_features: int, in_features: int, init_std: float) -> torch.Tensor:
    weight = torch.empty(out_features, in_features)
    nn.init.normal_(weight, mean=0.0, std=init_std)
    return weight


class ColumnParallelLinear(nn.Module):
    """y = x W^T + b with W (and b) split by rows (output features) across the
    tensor-parallel ranks; ``fused_parts`` > 1 for a fused weight [part_1; ...; part_n]
    split part by part (the Qwen ViT's qkv). The output stays split (each rank has its
    features). ``padded_out``: zero rows appended after initialisation up to that many
    output features (a vocabulary padded for the split; the same numbers are drawn).
    ``sequence_parallel``: the input is this rank's slice of the sequence (all-gathered first).
    ``split_sizes``: output features per rank, an uneven split (whole attention heads)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02,
                 fused_parts: int = 1, padded_out: Optional[int] = None, sequence_parallel: bool = False,
                 split_sizes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        full = _init_full(out_features, in_features, init_std)
        if padded_out is not None and padded_out > out_features:
            full = torch.cat([full, torch.zeros(padded_out - out_features, in_features, dtype=full.dtype)], dim=0)
            out_features = padded_out
        if split_sizes is None:
            divide(out_features // fused_parts, "out_features" + (" per fused part" if fused_parts > 1 else ""))
        self.in_features, self.out_features = in_features, out_features
        self.tp_size = tensor_parallel_size()
        self.sequence_parallel = sequence_parallel and self.tp_size > 1
        self.weight = nn.Parameter(shard_rows(full, fused_parts, split_sizes))
        self.bias = nn.Parameter(torch.zeros(self.weight.shape[0])) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequence_parallel:
            return F.linear(gather_from_sequence_parallel_region(x), self.weight, self.bias)
        return F.linear(copy_to_tensor_parallel_region(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
                + (f", tp_size={self.tp_size}" if self.tp_size > 1 else "")
                + (", sequence_parallel=True" if self.sequence_parallel else ""))


class RowParallelLinear(nn.Module):
    """y = x W^T + b with W split by columns (input features) across the tensor-parallel
    ranks: x arrives split (each rank its features), the partial products are summed
    over the ranks, then the bias (not split) is added. ``sequence_parallel``: the sum is
    reduce-scattered, each rank keeping its slice of the sequence. ``split_sizes``: input
    features per rank, an uneven split (whole attention heads)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, init_std: float = 0.02,
                 sequence_parallel: bool = False, split_sizes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if split_sizes is None:
            divide(in_features, "in_features")
        self.in_features, self.out_features = in_features, out_features
        self.tp_size = tensor_parallel_size()
        self.sequence_parallel = sequence_parallel and self.tp_size > 1
        full = _init_full(out_features, in_features, init_std)
        self.weight = nn.Parameter(full if self.tp_size == 1 else shard_rows(full.t(), 1, split_sizes).t().contiguous())
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.linear(x, self.weight, self.bias)
        partial = F.linear(x, self.weight)
        if self.sequence_parallel:
            out = reduce_scatter_to_sequence_parallel_region(partial)
        else:
            out = reduce_from_tensor_parallel_region(partial)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
                + (f", tp_size={self.tp_size}" if self.tp_size > 1 else "")
                + (", sequence_parallel=True" if self.sequence_parallel else ""))
