"""Megatron's tensor parallelism for the torch-style model code: this rank's tensor-parallel
group, the conjugate collectives around sharded layers, and the layers whose shards need
one (vocabulary-parallel embedding, RMSNorm over a sharded hidden dimension).

The regions are ``torch.autograd.Function``s over ``torch.distributed`` (its functional
all-reduce: nothing is written in place, which graph mode does not honour everywhere): on MindSpore
(auto_convert + adapters) they are Cells with a custom ``bprop`` and the collectives are
MindSpore's (HCCL on Ascend, exact CPU fallbacks on mccl), in PyNative and graph mode.

* ``copy_to_tensor_parallel_region``: identity forward, all-reduce of the gradient (before
  a column-parallel layer: every rank's input gradient is a partial sum);
* ``reduce_from_tensor_parallel_region``: all-reduce forward, identity backward (after a
  row-parallel layer: the partial products of the ranks add up);
* ``all_reduce_tensor_parallel``: all-reduce forward and backward (a sum whose result
  feeds rank-specific computation, e.g. the variance of a sharded RMSNorm).

Megatron's sequence parallelism (``--sequence-parallel``): between the column- and
row-parallel layers the hidden states [B, L, hidden] are split along the sequence (dim 1)
over the tensor-parallel ranks, so norms, residuals and dropout run on L / TP tokens:

* ``scatter_to_sequence_parallel_region``: this rank's slice forward, all-gather of the
  gradient (the decoder's input embeddings);
* ``gather_from_sequence_parallel_region``: all-gather forward, reduce-scatter of the
  gradient (the input of a column-parallel layer, in place of ``copy_to``);
* ``reduce_scatter_to_sequence_parallel_region``: reduce-scatter forward, all-gather of the
  gradient (the output of a row-parallel layer, in place of ``reduce_from``).

``initialize_tensor_parallel(groups, sequence_parallel)`` is called once, before a model is
built, with the rank lists of every tensor-parallel group (msmm-train does it from its rank
layout); layers read the size and rank at construction, the text decoder whether it runs
sequence parallel. Without it, everything is one rank.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed._functional_collectives import all_gather_single, reduce_scatter_single
from torch.distributed.nn.functional import all_reduce  # returns the sum (never writes into its argument)

SEQUENCE_DIM = 1  # hidden states are [B, L, hidden]


class _State:
    group = None  # this rank's tensor-parallel group (torch.distributed ProcessGroup)
    size = 1
    rank = 0
    sequence_parallel = False


_STATE = _State()


def initialize_tensor_parallel(groups: Sequence[Sequence[int]], sequence_parallel: bool = False) -> None:
    """Create the tensor-parallel groups (every process passes all of them, as
    ``torch.distributed.new_group`` requires) and remember the one holding this rank;
    ``sequence_parallel``: the text decoders built from now on split their sequence."""
    me = dist.get_rank()
    _STATE.sequence_parallel = sequence_parallel
    for ranks in groups:
        group = dist.new_group(list(ranks))
        if me in ranks:
            _STATE.group, _STATE.size, _STATE.rank = group, len(ranks), list(ranks).index(me)


def reset_tensor_parallel() -> None:
    _STATE.group, _STATE.size, _STATE.rank, _STATE.sequence_parallel = None, 1, 0, False


def tensor_parallel_size() -> int:
    return _STATE.size


def tensor_parallel_rank() -> int:
    return _STATE.rank


def sequence_parallel_enabled() -> bool:
    """Whether sequence parallelism is on (asked for, with more than one tensor-parallel rank)."""
    return _STATE.sequence_parallel and _STATE.size > 1


def divide(total: int, what: str) -> int:
    """``total`` / tensor-parallel size; an error naming ``what`` when it does not divide."""
    if total % _STATE.size:
        raise ValueError(f"{what} ({total}) is not divisible by the tensor-parallel size ({_STATE.size})")
    return total // _STATE.size


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return all_reduce(grad, group=ctx.group), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return all_reduce(x, group=group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        local = x.shape[SEQUENCE_DIM] // group.size
        return torch.narrow(x, SEQUENCE_DIM, group.rank * local, local)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_single(grad, SEQUENCE_DIM, ctx.group), None


class _GatherFromSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return all_gather_single(x, SEQUENCE_DIM, group)

    @staticmethod
    def backward(ctx, grad):
        return reduce_scatter_single(grad, "sum", SEQUENCE_DIM, ctx.group), None


class _ReduceScatterToSequenceRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return reduce_scatter_single(x, "sum", SEQUENCE_DIM, group)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_single(grad, SEQUENCE_DIM, ctx.group), None


def scatter_to_sequence_parallel_region(x: torch.Tensor) -> torch.Tensor:
    """[B, L, ...] -> this rank's [B, L / TP, ...] (L must divide by TP)."""
    return x if _STATE.size == 1 else _ScatterToSequenceRegion.apply(x, _STATE.group)


def gather_from_sequence_parallel_region(x: torch.Tensor) -> torch.Tensor:
    """[B, L / TP, ...] of every rank -> [B, L, ...], in rank order."""
    return x if _STATE.size == 1 else _GatherFromSequenceRegion.apply(x, _STATE.group)


def reduce_scatter_to_sequence_parallel_region(x: torch.Tensor) -> torch.Tensor:
    """The ranks' partial [B, L, ...] summed, this rank's [B, L / TP, ...] of the sum."""
    return x if _STATE.size == 1 else _ReduceScatterToSequenceRegion.apply(x, _STATE.group)


def copy_to_tensor_parallel_region(x: torch.Tensor) -> torch.Tensor:
    return x if _STATE.size == 1 else _CopyToRegion.apply(x, _STATE.group)


def reduce_from_tensor_parallel_region(x: torch.Tensor) -> torch.Tensor:
    return x if _STATE.size == 1 else _ReduceFromRegion.apply(x, _STATE.group)


def all_reduce_tensor_parallel(x: torch.Tensor) -> torch.Tensor:
    """All-reduce forward and backward: the two regions in turn."""
    return reduce_from_tensor_parallel_region(copy_to_tensor_parallel_region(x))


def padded_vocab_size(vocab_size: int, multiple: int = 1) -> int:
    """The vocabulary rounded up to a multiple of ``multiple`` x tensor-parallel size (the
    rows mm-convert pads with zeros; their logits are left out of the loss)."""
    step = multiple * _STATE.size
    return -(-vocab_size // step) * step


def shard_rows(full: torch.Tensor, parts: int = 1, sizes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """This rank's rows of ``full``: its contiguous chunk, or with ``parts`` (a fused q/k/v
    weight [parts * n, ...]) its chunk of each part, concatenated (mm-convert's split); with
    ``sizes`` (rows per rank, an uneven split) its rows of those."""
    if _STATE.size == 1:
        return full
    if sizes is not None:
        return torch.split(full, list(sizes), dim=0)[_STATE.rank].contiguous()
    pieces = [torch.chunk(p, _STATE.size, dim=0)[_STATE.rank] for p in torch.chunk(full, parts, dim=0)]
    return (pieces[0] if parts == 1 else torch.cat(pieces, dim=0)).contiguous()


class VocabParallelEmbedding(nn.Module):
    """Token embeddings with the (padded) vocabulary split in contiguous row blocks: each
    rank looks up the ids it holds, zeros the others, and the ranks' rows are summed.
    Initialised as ``nn.Embedding(vocab_size, dim)`` followed by ``normal_(std)`` on the full
    table, then sharded, so a model draws the same numbers whatever the split."""

    def __init__(self, vocab_size: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 init_std: float = 0.02, make_vocab_size_divisible_by: int = 1) -> None:
        super().__init__()
        full = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx).weight.data
        nn.init.normal_(full, mean=0.0, std=init_std)
        padded = padded_vocab_size(vocab_size, make_vocab_size_divisible_by)
        if padded > vocab_size:
            full = torch.cat([full, torch.zeros(padded - vocab_size, embedding_dim, dtype=full.dtype)], dim=0)
        self.vocab_size, self.padding_idx = vocab_size, padding_idx
        self.rows = padded // _STATE.size
        self.vocab_start = _STATE.rank * self.rows
        self.weight = nn.Parameter(shard_rows(full))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if _STATE.size == 1:
            return F.embedding(input_ids, self.weight, self.padding_idx)
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.rows)
        embeds = F.embedding(torch.where(outside, torch.zeros_like(local), local), self.weight)
        embeds = torch.where(outside.unsqueeze(-1), torch.zeros_like(embeds), embeds)
        return reduce_from_tensor_parallel_region(embeds)


class ShardedRMSNorm(nn.Module):
    """RMSNorm over a hidden dimension that is split across the tensor-parallel ranks
    (InternViT-6B's q/k norms over all heads): the sum of squares is all-reduced. ``local_size``:
    this rank's share of ``hidden_size`` (default an even split)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, local_size: Optional[int] = None) -> None:
        super().__init__()
        self.hidden_size, self.eps = hidden_size, eps
        local = divide(hidden_size, "the normalised hidden size") if local_size is None else local_size
        self.weight = nn.Parameter(torch.ones(local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        variance = all_reduce_tensor_parallel(x.pow(2).sum(-1, keepdim=True)) / self.hidden_size
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(dtype)
