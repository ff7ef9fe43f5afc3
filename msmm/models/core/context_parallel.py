"""Context parallelism for the torch-style text decoder: the sequence split over the ranks of a
context-parallel group, attention over every rank's keys and values.

A sequence of L tokens is cut into 2 x CP equal chunks and rank r keeps chunks r and
2 CP - 1 - r (Megatron's load-balanced split for causal attention: every rank gets as many
early as late tokens). Everything in a layer is token-local except attention, so a rank runs
its layers on its L / CP tokens; attention takes this rank's queries against the keys and values
of all ranks, all-gathered along the sequence (``all_gather_single``: its gradient is the
reduce-scatter, so each rank gets the key/value gradients of its own tokens summed over every
rank's queries). The keys come in rank order, not sequence order: the mask compares the global
positions of queries and keys (the causal offset), and padding and packed segments follow the
same positions, so the result is exactly attention over the whole sequence.

The token embeddings (and vision features) are computed for the whole sequence on every rank
of the group, then each keeps its tokens (``select_local``); rotary tables come from the kept
tokens' position ids (M-RoPE's [3, B, L] included). The loss of a rank covers its tokens, whose
next-token labels the trainer shifts on the whole sequence before splitting.

``initialize_context_parallel(groups)`` is called once, before a model is built (msmm-train does
it from its rank layout). Without it, everything is one rank.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_gather_single


class _State:
    group = None  # this rank's context-parallel group (torch.distributed ProcessGroup)
    size = 1
    rank = 0


_STATE = _State()


def initialize_context_parallel(groups: Sequence[Sequence[int]]) -> None:
    """Create the context-parallel groups (every process passes all of them) and remember the
    one holding this rank."""
    me = dist.get_rank()
    for ranks in groups:
        group = dist.new_group(list(ranks))
        if me in ranks:
            _STATE.group, _STATE.size, _STATE.rank = group, len(ranks), list(ranks).index(me)


def reset_context_parallel() -> None:
    _STATE.group, _STATE.size, _STATE.rank = None, 1, 0


def context_parallel_size() -> int:
    return _STATE.size


def local_positions(seq_len: int, rank: int, size: int) -> np.ndarray:
    """The sequence positions rank ``rank`` of ``size`` keeps: chunks r and 2 size - 1 - r of
    2 x size equal chunks."""
    if seq_len % (2 * size):
        raise ValueError(f"context parallelism: a sequence of {seq_len} tokens does not split into "
                         f"2 x {size} equal chunks (pad it to a multiple of {2 * size})")
    chunk = seq_len // (2 * size)
    first, second = rank * chunk, (2 * size - 1 - rank) * chunk
    return np.concatenate([np.arange(first, first + chunk), np.arange(second, second + chunk)])


def gathered_positions(seq_len: int, size: int) -> np.ndarray:
    """The sequence positions of all-gathered keys: every rank's, in rank order."""
    return np.concatenate([local_positions(seq_len, r, size) for r in range(size)])


def select_local(x: torch.Tensor, dim: int) -> torch.Tensor:
    """This rank's tokens of ``x`` (the whole sequence along ``dim``)."""
    if _STATE.size == 1:
        return x
    index = torch.tensor(local_positions(x.shape[dim], _STATE.rank, _STATE.size))
    return torch.index_select(x, dim, index)


def gather_keys(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's ``x`` (keys or values of its tokens) along ``dim``, in rank order; the
    gradient of each rank's part is summed over the ranks."""
    if _STATE.size == 1:
        return x
    return all_gather_single(x, dim, _STATE.group)


def context_attention_mask(
    seq_len: int,
    padding_mask: torch.Tensor = None,
    segment_ids: torch.Tensor = None,
) -> torch.Tensor:
    """The causal mask [B|1, 1, L / CP, L] of this rank's queries over the gathered keys:
    query position >= key position (global positions), keys restricted to real tokens
    (``padding_mask`` [B, L]) of the query's segment (``segment_ids`` [B, L]); every query
    attends to itself (as ``causal_attention_mask``)."""
    queries = torch.tensor(local_positions(seq_len, _STATE.rank, _STATE.size))
    keys = torch.tensor(gathered_positions(seq_len, _STATE.size))
    mask = (queries.unsqueeze(1) >= keys.unsqueeze(0)).unsqueeze(0).unsqueeze(0)  # [1, 1, Lq, L]
    if padding_mask is not None:
        mask = mask & (torch.index_select(padding_mask, 1, keys) != 0).unsqueeze(1).unsqueeze(1)
    if segment_ids is not None:
        query_segments = torch.index_select(segment_ids, 1, queries).unsqueeze(-1)
        key_segments = torch.index_select(segment_ids, 1, keys).unsqueeze(-2)
        mask = mask & (query_segments == key_segments).unsqueeze(1)
    return mask | (queries.unsqueeze(1) == keys.unsqueeze(0))
