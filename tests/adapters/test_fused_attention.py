"""The fused CPU attention and rotary kernels (adapters/kernels/attention.py, rope.py) against
real torch, in PyNative and under ``mindspore.jit``, through the fused kernel and through the
composite it falls back to (``MSMM_FUSED_KERNELS=0``):

- ``F.scaled_dot_product_attention`` values and gradients (q, k, v and an additive mask) for
  bool / additive / causal masks, grouped-query attention, fully masked rows, padding masks
  and L != S (decode, chunked prefill);
- ``F.rotary_embedding`` (adapters only) against torch's ``x * cos + rotate_half(x) * sin``,
  gradients w.r.t. x, cos and sin, with and without the head transpose."""
import mindspore as ms
import numpy as np
import pytest
import torch

import adapters.torch.nn.functional as F_MS
from adapters.kernels import attention as fused_attention
from adapters.kernels import rope as fused_rope
from tests.adapters.harness import MODES, check_function, randn

pytestmark = pytest.mark.skipif(not (fused_attention.AVAILABLE and fused_rope.AVAILABLE),
                                reason="fused kernels off or not buildable")

_KEEP: list = []  # compiled callables live for the session (MindSpore caches graphs by id())


def _fused(q, k, v, mask, causal, scale):
    assert fused_attention.supports(q, k, v, mask)
    return F_MS.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                             enable_gqa=True)


def _composite(q, k, v, mask, causal, scale):
    return F_MS._attention_math(q, k, v, mask, 0.0, causal, scale, True)


PATHS = {"fused": _fused, "composite": _composite}


def _keep_mask(shape, seed, dead_row=True):
    mask = np.random.default_rng(seed).random(shape) > 0.4
    if dead_row:
        mask[(0,) * (len(shape) - 2) + (1,)] = False  # a fully masked query: torch gives zeros
    return mask


def _additive(shape, seed):
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random(shape) > 0.3, 0.0, -np.inf) + rng.standard_normal(shape)
    mask[(0,) * (len(shape) - 2) + (2,)] = -np.inf
    return mask.astype(np.float32)


B, H, G, D = 2, 4, 2, 8
# name -> (q, k, v, mask or None, is_causal, scale)
CASES = {
    "bool_gqa_dead_row": (randn(B, H, 5, D), randn(B, G, 6, D, seed=1), randn(B, G, 6, D, seed=2),
                          _keep_mask((B, 1, 5, 6), 3), False, None),
    "bool_per_head_gqa": (randn(B, H, 5, D), randn(B, G, 6, D, seed=1), randn(B, G, 6, D, seed=2),
                          _keep_mask((B, H, 5, 6), 4), False, None),
    "bool_2d_mha": (randn(B, H, 5, D), randn(B, H, 6, D, seed=1), randn(B, H, 6, D, seed=2),
                    _keep_mask((5, 6), 5), False, 0.3),
    "causal_gqa": (randn(B, H, 6, D), randn(B, G, 6, D, seed=1), randn(B, G, 6, D, seed=2), None, True, None),
    "causal_chunk": (randn(B, H, 3, D), randn(B, G, 7, D, seed=1), randn(B, G, 7, D, seed=2), None, True, None),
    "additive_gqa": (randn(B, H, 5, D), randn(B, G, 6, D, seed=1), randn(B, G, 6, D, seed=2),
                     _additive((B, 1, 5, 6), 6), False, None),
    "additive_broadcast": (randn(B, H, 5, D), randn(B, H, 6, D, seed=1), randn(B, H, 6, D, seed=2),
                           _additive((1, 1, 5, 6), 7), False, None),
    "decode_padding": (randn(B, H, 1, D), randn(B, G, 7, D, seed=1), randn(B, G, 7, D, seed=2),
                       np.array([[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]], bool).reshape(B, 1, 1, 7),
                       False, None),
    "padding_prefill": (randn(B, H, 4, D), randn(B, G, 4, D, seed=1), randn(B, G, 4, D, seed=2),
                        np.tril(np.ones((4, 4), bool)) & np.array([[1, 1, 1, 1], [0, 1, 1, 1]], bool)[:, None, None],
                        False, None),
}


def _torch_sdpa(q, k, v, mask, causal, scale):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                            scale=scale, enable_gqa=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(CASES))
def test_sdpa_matches_torch(case, path, mode):
    check_function(PATHS[path], _torch_sdpa, CASES[case], mode, seed=9)


def _softmax_causal_offset(x, offset):
    return fused_attention.masked_softmax(x, None, 0.5, x.shape[2], causal=True, offset=offset)


def _torch_softmax_causal_offset(x, offset):
    length, keys = x.shape[-2], x.shape[-1]
    keep = torch.ones(length, keys, dtype=torch.bool).tril(offset)
    return torch.softmax((x * 0.5).masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", [2, -1])
def test_masked_softmax_causal_offset(offset, mode):
    """Bottom-right aligned causal band (offset S - L) and a band with empty rows (offset -1)."""
    check_function(_softmax_causal_offset, _torch_softmax_causal_offset, (randn(2, 3, 4, 6), offset), mode,
                   seed=9)


def test_fallback_cases():
    """Dropout, float64 and masks broadcast over keys are left to the composite."""
    q, k = ms.Tensor(randn(1, 2, 3, 4)), ms.Tensor(randn(1, 2, 5, 4))
    assert fused_attention.supports(q, k, k, None)
    assert not fused_attention.supports(q.astype(ms.float64), k, k, None)
    assert not fused_attention.supports(q, k, k, ms.Tensor(np.ones((1, 1, 3, 1), bool)))
    assert not fused_attention.supports(q[0], k[0], k[0], None)


def _rotary_fused(x, cos, sin, transpose_heads):
    assert fused_rope.supports(x, cos, sin, transpose_heads)
    return F_MS.rotary_embedding(x, cos, sin, transpose_heads)


def _rotary_composite(x, cos, sin, transpose_heads):
    return F_MS._rotary_composite(x, cos, sin, transpose_heads)


def _torch_rotary(x, cos, sin, transpose_heads):
    if transpose_heads:
        x, cos, sin = x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


ROTARY_PATHS = {"fused": _rotary_fused, "composite": _rotary_composite}
# name -> (x, cos, sin, transpose_heads)
ROTARY_CASES = {
    "heads_first_mrope": (randn(2, 5, 3, 8), randn(2, 5, 8, seed=1), randn(2, 5, 8, seed=2), True),
    "heads_first_shared": (randn(2, 1, 3, 8), randn(1, 1, 8, seed=1), randn(1, 1, 8, seed=2), True),
    "head_major": (randn(2, 3, 5, 8), randn(2, 1, 5, 8, seed=1), randn(2, 1, 5, 8, seed=2), False),
    "vision_2d": (randn(1, 3, 6, 4), randn(6, 4, seed=1), randn(6, 4, seed=2), False),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", list(ROTARY_PATHS))
@pytest.mark.parametrize("case", list(ROTARY_CASES))
def test_rotary_matches_torch(case, path, mode):
    check_function(ROTARY_PATHS[path], _torch_rotary, ROTARY_CASES[case], mode, seed=9)


def test_rotary_fallback_cases():
    """Per-head tables, odd head dims and float64 are left to the composite."""
    x = ms.Tensor(randn(1, 3, 5, 8))
    table = ms.Tensor(randn(5, 8))
    assert fused_rope.supports(x, table, table, False)
    assert not fused_rope.supports(x, ms.Tensor(randn(3, 5, 8)), ms.Tensor(randn(3, 5, 8)), False)
    assert not fused_rope.supports(x[..., :7], table[:, :7], table[:, :7], False)
    assert not fused_rope.supports(x.astype(ms.float64), table, table, False)


def _three_softmaxes(x, keep, add):
    return (fused_attention.masked_softmax(x, None, 0.5, 4) + fused_attention.masked_softmax(x, keep, 0.5, 4)
            + fused_attention.masked_softmax(x, add, 0.5, 4))


def _torch_three_softmaxes(x, keep, add):
    scores = x * 0.5
    masked = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
    return torch.softmax(scores, -1) + masked + torch.softmax(scores + add, -1)


@pytest.mark.parametrize("mode", MODES)
def test_softmax_variants_in_one_graph(mode):
    """Unmasked, bool and additive softmaxes in one graph (MindSpore once mixed up Custom ops
    of one kernel name there) with their own gradients."""
    check_function(_three_softmaxes, _torch_three_softmaxes,
                   (randn(2, 3, 4, 6), _keep_mask((2, 1, 4, 6), 8), randn(1, 3, 4, 6, seed=9)), mode, seed=9)


def _dropped_probs(q, k, v, mask):
    return F_MS.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.5, enable_gqa=True)


@pytest.mark.parametrize("mode", MODES)
def test_sdpa_dropout(mode):
    """Dropout on the fused path (MindSpore's RNG, so checked by structure): with v the identity
    the output is the probabilities, each either dropped (0) or torch's value / (1 - p)."""
    q, k = randn(2, 4, 5, 6), randn(2, 2, 6, 6, seed=1)
    v = np.broadcast_to(np.eye(6, dtype=np.float32), (2, 2, 6, 6)).copy()
    mask = _keep_mask((2, 1, 5, 6), 3, dead_row=False)
    assert fused_attention.supports(*map(ms.Tensor, (q, k, v, mask)))
    run = ms.jit(_dropped_probs) if mode == "graph" else _dropped_probs
    _KEEP.append(run)
    got = run(*map(ms.Tensor, (q, k, v, mask))).asnumpy()
    want = _torch_sdpa(*map(torch.tensor, (q, k, v, mask)), False, None).numpy() / 0.5
    kept = got != 0
    assert 0 < kept[want != 0].mean() < 1
    np.testing.assert_allclose(got[kept], want[kept], rtol=1e-5, atol=1e-6)
