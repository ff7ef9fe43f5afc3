"""Context parallelism for the torch-style text decoder: the sequence split over the ranks of a
context-parallel group, attention over every rank's keys and values.

A sequence of L tokens is cut into 2 x CP equal chunks and rank r keeps chunks r and
2 CP - 1 - r (Megatron's load-balanced split for causal attention: every rank gets as many
early as late tokens). Everything in a layer is token-local except attention, so a rank runs
its layers on its L / CP tokens. Attention takes this rank's queries against the keys and
values of every rank, in one of two exact ways (``initialize_context_parallel(attention=)``):

* ``"all_gather"`` (the default): the keys and values of all ranks gathered along the sequence
  (``all_gather_single``: its gradient is the reduce-scatter), one attention call;
* ``"ring"`` (the schedule of MindSpeed's ``megatron_cp_algo``): CP steps; at step i a rank
  attends to the key/value block of rank r - i, keeping a running max and sum per query (online
  softmax), while the blocks move one rank along the ring (``ring_pass``). The move is a
  collective permute built on an all-reduce of a CP-slot buffer (point-to-point does not run
  inside a compiled graph on CPU), so each step moves and holds CP blocks: today it costs more
  than the all-gather; a point-to-point ring step would give ring attention's memory saving.

The keys of rank s are its positions: the mask compares the global positions of queries and
keys (the causal offset), and key padding and packed segments follow the same positions, so
either way the result is attention over the whole sequence.

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
from torch.distributed.nn.functional import all_reduce  # returns the sum (never writes into its argument)


ATTENTIONS = ("ring", "all_gather")


class _State:
    group = None  # this rank's context-parallel group (torch.distributed ProcessGroup)
    size = 1
    rank = 0
    attention = "all_gather"


_STATE = _State()


def initialize_context_parallel(groups: Sequence[Sequence[int]], attention: str = "all_gather") -> None:
    """Create the context-parallel groups (every process passes all of them) and remember the
    one holding this rank; ``attention``: ``"ring"`` or ``"all_gather"``."""
    if attention not in ATTENTIONS:
        raise ValueError(f"context-parallel attention must be one of {ATTENTIONS}, got {attention!r}")
    _STATE.attention = attention
    me = dist.get_rank()
    for ranks in groups:
        group = dist.new_group(list(ranks))
        if me in ranks:
            _STATE.group, _STATE.size, _STATE.rank = group, len(ranks), list(ranks).index(me)


def reset_context_parallel() -> None:
    _STATE.group, _STATE.size, _STATE.rank, _STATE.attention = None, 1, 0, "all_gather"


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


def ring_attention_enabled() -> bool:
    return _STATE.size > 1 and _STATE.attention == "ring"


def gather_keys(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's ``x`` (keys or values of its tokens) along ``dim``, in rank order; the
    gradient of each rank's part is summed over the ranks."""
    if _STATE.size == 1:
        return x
    return all_gather_single(x, dim, _STATE.group)


def ring_pass(x: torch.Tensor) -> torch.Tensor:
    """The ``x`` of the previous rank on the ring (rank r gets rank r - 1's); the gradient goes
    the other way. A collective permute: each rank puts its ``x`` in the next rank's slot of a
    zero buffer and the buffers are summed (exact: the other slots add zeros)."""
    size, rank = _STATE.size, _STATE.rank
    slots = [torch.zeros_like(x) for _ in range(size)]
    slots[(rank + 1) % size] = x
    return all_reduce(torch.stack(slots), group=_STATE.group)[rank]


NEG = -1e30  # a masked score: exp(NEG - max) is 0 without the NaNs of -inf - -inf


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """Attention of this rank's queries q [B, H, n, D] over every rank's keys and values, which
    arrive one block per step around the ring: k and v [B, G, n, D] (this rank's; H a multiple
    of G), mask [B|1, 1, n, CP * n] over the keys in rank order (``context_attention_mask``).
    Returns [B, H, n, D] in q's dtype, fp32 inside."""
    size, rank = _STATE.size, _STATE.rank
    b, h, n, d = q.shape
    groups = k.shape[1]
    q32 = q.float().reshape(b, groups, h // groups, n, d)  # the queries of each key/value group together
    out = torch.zeros_like(q32)
    running_max = torch.full(q32.shape[:4] + (1,), NEG, dtype=torch.float32)
    running_sum = torch.zeros(q32.shape[:4] + (1,), dtype=torch.float32)
    keys, values = k, v
    for step in range(size):
        source = (rank - step) % size  # whose block this rank holds now
        block_mask = torch.narrow(mask, 3, source * n, n).unsqueeze(1)  # [B|1, 1, 1, n, n]
        scores = torch.matmul(q32, keys.float().unsqueeze(2).transpose(-1, -2)) * scale
        scores = torch.where(block_mask, scores, NEG)
        new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True)).detach()
        weights = torch.exp(scores - new_max)
        correction = torch.exp(running_max - new_max)
        running_sum = running_sum * correction + weights.sum(dim=-1, keepdim=True)
        out = out * correction + torch.matmul(weights, values.float().unsqueeze(2))
        running_max = new_max
        if step < size - 1:
            keys, values = ring_pass(keys), ring_pass(values)
    return (out / running_sum).reshape(b, h, n, d).to(q.dtype)


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
