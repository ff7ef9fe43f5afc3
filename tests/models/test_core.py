"""Transformer core pieces against independent references (numpy loops, HF functions)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msmm.models.core import (
    ColumnParallelLinear,
    RotaryEmbedding,
    RowParallelLinear,
    SelfAttention,
    TransformerConfig,
    cached_attention_mask,
    causal_attention_mask,
    quick_gelu,
    segment_mask,
)


def test_causal_mask_combines_padding_and_segments():
    padding = np.array([[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]])
    segments = np.array([[0, 0, 1, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1, 2]])
    mask = causal_attention_mask(7, torch.tensor(padding), torch.tensor(segments)).numpy()
    assert mask.shape == (2, 1, 7, 7)
    for b in range(2):
        for q in range(7):
            for k in range(7):
                expected = (k <= q and padding[b, k] == 1 and segments[b, q] == segments[b, k]) or k == q
                assert mask[b, 0, q, k] == expected, (b, q, k)


def test_segment_mask_is_block_diagonal():
    mask = segment_mask(torch.tensor([0, 0, 1, 2, 2, 2])).numpy()[0, 0]
    blocks = [np.ones((2, 2)), np.ones((1, 1)), np.ones((3, 3))]
    expected = np.zeros((6, 6), bool)
    start = 0
    for block in blocks:
        n = block.shape[0]
        expected[start:start + n, start:start + n] = True
        start += n
    np.testing.assert_array_equal(mask, expected)


def test_mrope_matches_hf_multimodal_rotary():
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_multimodal_rotary_pos_emb

    from msmm.models.core import apply_rotary

    torch.manual_seed(0)
    head_dim, section = 16, [2, 3, 3]
    positions = torch.randint(0, 50, (3, 2, 5))
    q, k = torch.randn(2, 4, 5, head_dim), torch.randn(2, 2, 5, head_dim)
    cos, sin = RotaryEmbedding(head_dim, 10000.0, section)(positions)
    # HF builds full-width tables per axis and picks sections inside the apply function
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = positions.float().unsqueeze(-1) * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    ref_q, ref_k = apply_multimodal_rotary_pos_emb(q, k, emb.cos(), emb.sin(), section)
    torch.testing.assert_close(apply_rotary(q, cos.unsqueeze(1), sin.unsqueeze(1)), ref_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rotary(k, cos.unsqueeze(1), sin.unsqueeze(1)), ref_k, atol=1e-6, rtol=0)


def test_quick_gelu_matches_definition():
    x = torch.linspace(-8, 8, 101)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x), atol=1e-6, rtol=1e-6)


def test_parallel_linear_layout():
    col, row = ColumnParallelLinear(8, 12, bias=True), RowParallelLinear(12, 8)
    assert col.weight.shape == (12, 8) and col.bias.shape == (12,) and row.bias is None
    x = torch.randn(3, 8)
    torch.testing.assert_close(col(x), x @ col.weight.T + col.bias)


@pytest.mark.parametrize("rank", [0, 1])
def test_tensor_parallel_shards_are_mm_converts_split_of_the_same_initialisation(rank, monkeypatch):
    """A rank's shard is what mm-convert's split (msmm.checkpoint.parallel) gives that rank
    from the weight one process initialises with the same seed: same numbers at any TP."""
    from msmm.checkpoint.parallel import COLUMN, FUSED_QKV, ROW, VOCAB, split
    from msmm.models.core import tensor_parallel

    def build():
        torch.manual_seed(0)
        return (ColumnParallelLinear(8, 12), RowParallelLinear(12, 8), ColumnParallelLinear(8, 24, fused_parts=3),
                ColumnParallelLinear(8, 7, padded_out=tensor_parallel.padded_vocab_size(7)),
                tensor_parallel.VocabParallelEmbedding(7, 8))

    full = [m.weight.detach().numpy() for m in build()]
    monkeypatch.setattr(tensor_parallel._STATE, "size", 2)
    monkeypatch.setattr(tensor_parallel._STATE, "rank", rank)
    shards = [m.weight.detach().numpy() for m in build()]
    for kind, whole, shard in zip((COLUMN, ROW, FUSED_QKV, VOCAB, VOCAB), full, shards):
        np.testing.assert_array_equal(shard, split(kind, whole, 2, padded=8 if kind == VOCAB else None)[rank])
    with pytest.raises(ValueError, match=r"out_features \(9\) is not divisible by the tensor-parallel size \(2\)"):
        ColumnParallelLinear(8, 9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_attention_heads=5), "not divisible by num_attention_heads"),
        (dict(num_query_groups=3), "not a multiple of num_query_groups"),
        (dict(mrope_section=(2, 2, 2)), "must sum to kv_channels / 2"),
    ],
)
def test_transformer_config_rejects_inconsistent_shapes(kwargs, message):
    base = dict(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=32)
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**{**base, **kwargs})


def test_cached_decode_matches_attention_without_cache():
    """Prompt through the cache (one-hot write), then one token through ``SelfAttention.decode``
    (select write, grouped-query sdpa, rotary with the head transpose) equals the last row of plain causal
    attention over the whole sequence (GQA, 4 heads over 2 groups, a left-padded row)."""
    torch.manual_seed(0)
    config = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                               ffn_hidden_size=32, add_qkv_bias=True)
    attn = SelfAttention(config).eval()
    rope = RotaryEmbedding(config.kv_channels)
    b, n, total = 2, 7, 16
    x = torch.randn(b, n, 64)
    padding = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    positions = (padding.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = attn(x, rope(positions), causal_attention_mask(n, padding))
        slots = torch.eye(total)
        cache_mask = torch.cat([padding, torch.ones(b, total - n, dtype=padding.dtype)], 1)
        zeros = torch.zeros(b, 2, total, 16)
        _, (keys, values) = attn(x[:, :-1], rope(positions[:, :-1]),
                                 cached_attention_mask(slots[: n - 1], cache_mask), (zeros, zeros, slots[: n - 1]))
        last, (keys, values) = attn(x[:, -1:], rope(positions[:, -1:]),
                                    cached_attention_mask(slots[n - 1: n], cache_mask), (keys, values, slots[n - 1: n]))
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(keys[:, :, n:]) == 0 and torch.count_nonzero(keys[:, :, n - 1]) > 0
