"""Self-attention through F.scaled_dot_product_attention, and the masks it takes.

Masks are boolean, True where a query may attend to a key, shaped [B or 1, 1, Lq, Lk].
One mask expresses causal order, key padding and packed sequences (block-diagonal from
segment ids) at once, so the same call serves padded batches, packed/varlen batches and
the ViT's per-image blocks; the Ascend dispatch maps it onto the fused flash-attention
kernel.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TransformerConfig
from .context_parallel import gather_keys, ring_attention, ring_attention_enabled
from .parallel_linear import ColumnParallelLinear, RowParallelLinear
from .rotary import apply_rotary_heads_first
from .tensor_parallel import divide


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal mask [B, 1, L, L] (or [1, 1, L, L] for 1D ids): same segment attends."""
    if len(segment_ids.shape) == 1:
        segment_ids = segment_ids.unsqueeze(0)
    return (segment_ids.unsqueeze(-1) == segment_ids.unsqueeze(-2)).unsqueeze(1)


def causal_attention_mask(
    seq_len: int,
    padding_mask: Optional[torch.Tensor] = None,
    segment_ids: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal mask, restricted to valid keys (``padding_mask`` [B, L], 1 = token) and to the
    query's own segment (``segment_ids`` [B, L], packed sequences).

    Every query also attends to itself, so rows of padding tokens are never empty (their
    outputs are finite and ignored) and sdpa never produces NaN.
    """
    pos = torch.arange(seq_len)
    mask = (pos.unsqueeze(1) >= pos.unsqueeze(0)).unsqueeze(0).unsqueeze(0)  # [1, 1, L, L]
    if padding_mask is not None:
        mask = mask & (padding_mask != 0).unsqueeze(1).unsqueeze(1)
    if segment_ids is not None:
        mask = mask & segment_mask(segment_ids)
    return mask | (pos.unsqueeze(1) == pos.unsqueeze(0))


# adapters (MindSpore) has one-kernel cache writes, F.write_slots (a new row per sequence) and
# F.write_rows (the prefill's rows), and a one-kernel decode projection (q/k/v, their rotation,
# both cache writes), F.project_qkv; torch has none of them
_write_slots = getattr(F, "write_slots", None)
_write_rows = getattr(F, "write_rows", None)
_project_qkv = getattr(F, "project_qkv", None)


def write_cache(cache: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Static-shape KV-cache update: cache [B, G, Lmax, D] with rows ``slots`` [L, Lmax]
    (one-hot, float: row i marks the position of new token i) replaced by new [B, G, L, D].
    A matmul with a one-hot matrix (for one new token a write at its slot), exact in
    floating point, so one compiled graph serves every decode step (no data-dependent
    shapes or in-place writes). One new token per row may also come with per-row slots
    [B, 1, Lmax] (rows at different cache positions: continuous batching).

    One new token (decoding) is ``where(slot, new, cache)``: with adapters one kernel,
    ``F.write_slots`` (on CPU a copy of the cache and the new row at its slot, not a broadcast
    select that reads the condition and both operands per element); several (the prefill)
    with adapters ``F.write_rows`` (the rows copied to their slots, not a matmul)."""
    if slots.shape[-2] == 1:  # one new token (decoding): no matmul over the cache
        if _write_slots is not None:
            return _write_slots(cache, new, slots)
        return torch.where((slots != 0).reshape(-1, 1, slots.shape[-1], 1), new, cache)
    if _write_rows is not None:
        return _write_rows(cache, new, slots)
    kept = cache * (1.0 - slots.sum(0)).reshape(1, 1, slots.shape[1], 1)
    return kept + torch.matmul(slots.transpose(0, 1).to(new.dtype), new)


def cached_attention_mask(
    slots: torch.Tensor, padding_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mask [B|1, 1, L, Lmax] for L new tokens at positions ``slots`` [L, Lmax] (one-hot;
    or per row [B, L, Lmax]) over the whole cache: causal (keys up to the query's position)
    and, with ``padding_mask`` [B, Lmax] (1 = token), only real tokens (and always the query
    itself)."""
    slots = slots.reshape(-1, slots.shape[-2], slots.shape[-1])  # [B|1, L, Lmax]
    positions = torch.arange(slots.shape[-1]).to(slots.dtype)
    query_pos = (slots * positions).sum(-1)  # [B|1, L]
    mask = (positions <= query_pos.unsqueeze(-1)).unsqueeze(1)
    if padding_mask is not None:
        mask = mask & (padding_mask != 0).unsqueeze(1).unsqueeze(1)
    return mask | (slots != 0).unsqueeze(1)


def dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """q [B, H, Lq, D], k/v [B, G, Lk, D] with H a multiple of G (GQA) -> [B, Lq, H * D]."""
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
    b, h, l, d = out.shape
    return out.transpose(1, 2).reshape(b, l, h * d)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one new token per row: q [B, H, 1, D] over k/v [B, G, S, D] (GQA), mask
    bool [B|1, 1, 1, S] -> [B, 1, H * D]. With L = 1 the head-major output is a reshape; the
    cache is not repeated per query head (adapters' CPU kernel stacks a group's query heads
    into one batched matmul against the group's keys, around its fused masked softmax)."""
    b, h, _, d = q.shape
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=h != k.shape[1])
    return out.reshape(b, 1, h * d)


class SelfAttention(nn.Module):
    """Multi-head / grouped-query self-attention with RoPE, separate q/k/v projections.

    Parameter names follow HF Llama/Qwen2: q_proj, k_proj, v_proj, o_proj.
    Subclasses with another projection layout override ``project_qkv`` and ``output``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        # this rank's heads and key/value groups (all of them without tensor parallelism)
        self.num_heads = divide(config.num_attention_heads, "num_attention_heads")
        self.num_groups = divide(config.num_query_groups, "num_query_groups")
        self.head_dim = config.kv_channels
        self.dropout = config.attention_dropout
        self._build_projections(config)
        # decode through F.project_qkv: this class's q/k/v layout (subclasses with another
        # override project_qkv), checked again per call for the linear layers
        self._project_qkv_layout = type(self).project_qkv is SelfAttention.project_qkv

    def _build_projections(self, config: TransformerConfig) -> None:
        h, std = config.hidden_size, config.init_method_std
        q_out, kv_out = config.num_attention_heads * self.head_dim, config.num_query_groups * self.head_dim
        sp = config.sequence_parallel
        self.q_proj = ColumnParallelLinear(h, q_out, config.add_qkv_bias, std, sequence_parallel=sp)
        self.k_proj = ColumnParallelLinear(h, kv_out, config.add_qkv_bias, std, sequence_parallel=sp)
        self.v_proj = ColumnParallelLinear(h, kv_out, config.add_qkv_bias, std, sequence_parallel=sp)
        self.o_proj = RowParallelLinear(q_out, h, config.add_bias_linear, std, sequence_parallel=sp)

    def project_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, hidden] (sequence parallel: this rank's [B, L / TP, hidden]) -> q [B, L, H, D],
        k and v [B, L, G, D]."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        b, l = q.shape[0], q.shape[1]
        q = q.view(b, l, self.num_heads, self.head_dim)
        k = k.view(b, l, self.num_groups, self.head_dim)
        v = v.view(b, l, self.num_groups, self.head_dim)
        return q, k, v

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.o_proj(x)

    def forward(
        self,
        x: torch.Tensor,
        rotary: Tuple[torch.Tensor, torch.Tensor],
        mask: Optional[torch.Tensor],
        cache: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    ):
        """x [B, L, hidden]; rotary = (cos, sin) [B, L, D]; mask bool [B|1, 1, L, L].

        With ``cache`` = (keys, values [B, G, Lmax, D], slots [L, Lmax]) the new keys and
        values are written at ``slots``, attention runs over the whole cache (mask
        [B|1, 1, L, Lmax]) and the result is (output, (keys, values))."""
        if cache is not None and x.shape[1] == 1:
            return self.decode(x, rotary, mask, cache)
        q, k, v = self.project_qkv(x)
        q = apply_rotary_heads_first(q, rotary[0], rotary[1])
        k = apply_rotary_heads_first(k, rotary[0], rotary[1])
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = write_cache(cache[0], k, cache[2]), write_cache(cache[1], v, cache[2])
        elif ring_attention_enabled():  # context parallelism, keys and values passed around the ring
            return self.output(self.attend_over_ring(q, k, v, mask))
        else:  # context parallelism: the keys and values of every rank's tokens (one rank: as they are)
            k, v = gather_keys(k, 2), gather_keys(v, 2)
        dropout = self.dropout if self.training else 0.0
        out = self.output(dot_product_attention(q, k, v, mask, dropout))
        return out if cache is None else (out, (k, v))

    def attend_over_ring(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [B, H, n, D], k/v [B, G, n, D] of this context-parallel rank's tokens -> [B, n, H * D]."""
        if self.dropout and self.training:
            raise ValueError(f"text_decoder attention_dropout {self.dropout} with --context-parallel-attention ring is "
                             "not implemented; use --context-parallel-attention all_gather")
        out = ring_attention(q, k, v, mask, 1.0 / math.sqrt(self.head_dim))
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)

    def decode(
        self,
        x: torch.Tensor,
        rotary: Tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        cache: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ):
        """``forward`` with a cache for one new token per row (x [B, 1, hidden]), in fewer
        kernels: with L = 1 the head-major layout of v is a reshape, the cache write a select,
        and attention ``decode_attention``. Same values as forward. With adapters (MindSpore)
        and plain q/k/v linear layers, projections, rotations and cache writes are one kernel,
        ``F.project_qkv``, whose queries come grouped by key/value head."""
        b, g, d = x.shape[0], self.num_groups, self.head_dim
        if self._fused_qkv():
            q, k, v = _project_qkv(x, self.q_proj.weight, self.q_proj.bias, self.k_proj.weight, self.k_proj.bias,
                                   self.v_proj.weight, self.v_proj.bias, rotary[0], rotary[1], cache[0], cache[1],
                                   cache[2])
            # q [B, G, H / G, D]: a group's query heads as rows over the group's keys (mask [B|1, 1, 1, S])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.output(out.reshape(b, 1, self.num_heads * d)), (k, v)
        q, k, v = self.project_qkv(x)
        q = apply_rotary_heads_first(q, rotary[0], rotary[1])
        k = apply_rotary_heads_first(k, rotary[0], rotary[1])
        k, v = write_cache(cache[0], k, cache[2]), write_cache(cache[1], v.reshape(b, g, 1, d), cache[2])
        return self.output(decode_attention(q, k, v, mask)), (k, v)

    def _fused_qkv(self) -> bool:
        """Whether ``decode`` takes ``F.project_qkv`` (adapters only): the q/k/v layout of this
        class and plain q/k/v linear layers (not LoRA or quantized, no sequence parallelism)."""
        return (_project_qkv is not None and self._project_qkv_layout
                and isinstance(self.q_proj, ColumnParallelLinear) and isinstance(self.k_proj, ColumnParallelLinear)
                and isinstance(self.v_proj, ColumnParallelLinear) and not self.q_proj.sequence_parallel)
