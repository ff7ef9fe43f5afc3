"""The decode KV-cache kernels of adapters (``adapters/kernels/csrc/cache.cpp``) and msmm's use of them.

- ``F.write_slots`` (``write_cache`` for one new token on MindSpore) against numpy's
  ``where(slots != 0, new, cache)`` (the formula it replaces), in PyNative and compiled: one
  slot for every row, per-row slots (continuous batching), slot vectors that mark no slot or
  several, float16, the gradient, and msmm's ``write_cache`` on MindSpore against the same
  function on real torch;
- ``F.write_rows`` (the prefill's write) against the one-hot matmul it replaces;
- ``F.project_qkv`` (a decode step's projections, rotations and both writes in one kernel)
  against numpy and adapters' composite of the separate kernels (bit for bit), its gradient,
  and ``SelfAttention.decode`` taking it only for plain q/k/v layers, with the same outputs.
"""
from __future__ import annotations

import os
import sys

import mindspore
import numpy as np
import pytest
import torch

import adapters.torch as torch_ms
import adapters.torch.nn.functional as F_ms
from adapters.kernels import cache as fused_cache
from adapters.kernels import swiglu as fused_swiglu
from adapters.torch.nn.functional import _project_qkv_composite, _write_rows_composite, _write_slots_composite
from msmm import runtime
from msmm.models.core import attention as attention_torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402

B, G, S, D = 3, 2, 24, 8
# with MSMM_FUSED_KERNELS=0 (or no compiler) the same checks run on adapters' composites
FUSED = fused_cache.AVAILABLE and fused_swiglu.AVAILABLE


def reference(cache: np.ndarray, new: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The formula write_cache used before the kernel: a broadcast select."""
    return np.where((slots != 0).reshape(-1, 1, slots.shape[-1], 1), new, cache)


def one_hot(indices, length: int = S) -> np.ndarray:
    """[len(indices), 1, length] float32, row r marking slot indices[r]."""
    return (np.arange(length)[None, :] == np.asarray(indices)[:, None]).astype(np.float32)[:, None]


def inputs(rng, dtype=np.float32):
    cache = rng.standard_normal((B, G, S, D)).astype(dtype)
    new = rng.standard_normal((B, G, 1, D)).astype(dtype)
    return cache, new


SLOTS = {
    "shared": one_hot([5]),  # [1, 1, S]: every row at slot 5 (generate)
    "per_row": one_hot([0, 17, S - 1]),  # [B, 1, S]: rows at different slots (msmm-serve)
    "per_row_2d": one_hot([9, 3, 9])[:, 0],  # [B, S]
    "none_and_two": np.stack([np.zeros(S, np.float32), one_hot([4])[0, 0] + one_hot([20])[0, 0],
                              one_hot([1])[0, 0] * -2.5])[:, None],  # no slot, two slots, a non-1 mark
}


def _write(cache, new, slots):
    return F_ms.write_slots(cache, new, slots)


_compiled = runtime.jit(_write)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
@pytest.mark.parametrize("case", sorted(SLOTS))
def test_write_slots_matches_the_select(rng, case, mode):
    cache, new = inputs(rng)
    slots = SLOTS[case]
    args = (torch_ms.tensor(cache), torch_ms.tensor(new), torch_ms.tensor(slots))
    assert fused_cache.serves(*args) == FUSED
    got = (_compiled if mode == "jit" else _write)(*args).asnumpy()
    np.testing.assert_array_equal(got, reference(cache, new, slots))
    # the input cache is not written (the result is a new tensor)
    np.testing.assert_array_equal(args[0].asnumpy(), cache)
    np.testing.assert_array_equal(_write_slots_composite(*args).asnumpy(), got)


def test_write_slots_float16_and_unserved_shapes_fall_back(rng):
    cache, new = inputs(rng, np.float16)
    slots = SLOTS["per_row"]
    got = _compiled(torch_ms.tensor(cache), torch_ms.tensor(new), torch_ms.tensor(slots)).asnumpy()
    np.testing.assert_array_equal(got, reference(cache, new, slots))
    # slots in float16: not the kernel's, the composite select
    half = torch_ms.tensor(slots.astype(np.float16))
    assert not fused_cache.serves(torch_ms.tensor(cache), torch_ms.tensor(new), half)
    got = _write(torch_ms.tensor(cache), torch_ms.tensor(new), half).asnumpy()
    np.testing.assert_array_equal(got, reference(cache, new, slots))


def test_write_slots_rejects_more_than_one_new_row(rng):
    cache, _ = inputs(rng)
    with pytest.raises(ValueError, match="write_slots"):
        F_ms.write_slots(torch_ms.tensor(cache), torch_ms.tensor(cache[:, :, :2]), torch_ms.tensor(SLOTS["shared"]))


@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_write_slots_gradient(rng, mode):
    cache, new = inputs(rng)
    slots = SLOTS["none_and_two"]
    weight = rng.standard_normal((B, G, S, D)).astype(np.float32)
    w = torch_ms.tensor(weight)

    def loss(c, n, s):
        return (F_ms.write_slots(c, n, s) * w).sum()

    grad = mindspore.grad(loss, grad_position=(0, 1))
    if mode == "jit":
        grad = runtime.jit(grad)
    dcache, dnew = grad(torch_ms.tensor(cache), torch_ms.tensor(new), torch_ms.tensor(slots))
    marked = (slots != 0).reshape(B, 1, S, 1)
    np.testing.assert_allclose(dcache.asnumpy(), np.where(marked, 0, weight), rtol=0, atol=0)
    np.testing.assert_allclose(dnew.asnumpy(), np.where(marked, weight, 0).sum(2, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
def test_msmm_write_cache_on_mindspore_equals_torch(rng, mode):
    """msmm's write_cache converted to adapters (it must take F.write_slots) against the same
    function on real torch, for a decode write with per-row slots and a prefill write."""
    ms_backend.converted_models()
    converted = ms_backend._converted_sys_modules["msmm.models.core.attention"]
    assert converted._write_slots is F_ms.write_slots and converted._write_rows is F_ms.write_rows
    assert attention_torch._write_slots is None and attention_torch._write_rows is None  # real torch: select, matmul
    cache, new = inputs(rng)
    prompt = rng.standard_normal((B, G, 4, D)).astype(np.float32)
    prefill_slots = np.eye(S, dtype=np.float32)[:4]
    for new_rows, slots in ((new, SLOTS["per_row"]), (new, SLOTS["shared"]), (prompt, prefill_slots)):
        expected = attention_torch.write_cache(torch.tensor(cache), torch.tensor(new_rows), torch.tensor(slots)).numpy()
        with ms_backend.converted_in_sys_modules():
            fn = converted.write_cache
            if mode == "jit":
                fn = runtime.jit(fn)
                ms_backend._COMPILED.append(fn)
            got = fn(torch_ms.tensor(cache), torch_ms.tensor(new_rows), torch_ms.tensor(slots)).asnumpy()
        np.testing.assert_array_equal(got, expected)


# ---- F.write_rows: the prefill's write (several rows, one-hot slots [L, S])

ROW_SLOTS = {
    "prefix": np.eye(S, dtype=np.float32)[:5],  # the prompt in slots 0..4 (prefill)
    "scattered": one_hot([7, 2, S - 1, 11])[:, 0],  # distinct slots in any order
}


def rows_reference(cache, new, slots):
    """The one-hot matmul write_cache used for several rows."""
    return cache * (1.0 - slots.sum(0)).reshape(1, 1, -1, 1) + np.einsum("ls,bgld->bgsd", slots, new)


def _write_rows(cache, new, slots):
    return F_ms.write_rows(cache, new, slots)


_rows_compiled = runtime.jit(_write_rows)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
@pytest.mark.parametrize("case", sorted(ROW_SLOTS))
def test_write_rows_matches_the_one_hot_matmul(rng, case, mode):
    slots = ROW_SLOTS[case]
    cache = rng.standard_normal((B, G, S, D)).astype(np.float32)
    new = rng.standard_normal((B, G, slots.shape[0], D)).astype(np.float32)
    args = (torch_ms.tensor(cache), torch_ms.tensor(new), torch_ms.tensor(slots))
    assert fused_cache.serves_rows(*args) == FUSED
    got = (_rows_compiled if mode == "jit" else _write_rows)(*args).asnumpy()
    np.testing.assert_array_equal(got, rows_reference(cache, new, slots))
    np.testing.assert_array_equal(got, _write_rows_composite(*args).asnumpy())


def test_write_rows_gradient_equals_the_composite(rng):
    slots = ROW_SLOTS["scattered"]
    cache = torch_ms.tensor(rng.standard_normal((B, G, S, D)).astype(np.float32))
    new = torch_ms.tensor(rng.standard_normal((B, G, slots.shape[0], D)).astype(np.float32))
    weight = torch_ms.tensor(rng.standard_normal((B, G, S, D)).astype(np.float32))
    grads = [mindspore.grad(lambda c, n, s, f=f: (f(c, n, s) * weight).sum(), grad_position=(0, 1))(
        cache, new, torch_ms.tensor(slots)) for f in (F_ms.write_rows, _write_rows_composite)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-6, atol=1e-6)


# ---- F.project_qkv: a decode step's projections, rotations and both cache writes in one kernel

HIDDEN, HEADS = 16, 4


def _rope_heads_first(x, cos, sin):
    """numpy: x [B, 1, H, D] rotated by cos / sin [Bc, 1, D] -> [B, H, 1, D]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return (x * cos[:, :, None] + rotated * sin[:, :, None]).transpose(0, 2, 1, 3)


def project_qkv_inputs(rng, bias: bool, tables: int):
    x = rng.standard_normal((B, 1, HIDDEN)).astype(np.float32)
    wq = rng.standard_normal((HEADS * D, HIDDEN)).astype(np.float32) * 0.3
    wk, wv = (rng.standard_normal((G * D, HIDDEN)).astype(np.float32) * 0.3 for _ in range(2))
    bq = rng.standard_normal(HEADS * D).astype(np.float32) if bias else None
    bk, bv = (rng.standard_normal(G * D).astype(np.float32) if bias else None for _ in range(2))
    angles = rng.uniform(0, 6, (tables, 1, D // 2)).astype(np.float32)
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))
    k_cache, v_cache = (rng.standard_normal((B, G, S, D)).astype(np.float32) for _ in range(2))
    return [x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, v_cache]


def project_qkv_reference(x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, v_cache, slots):
    def linear(w, bias):
        return x @ w.T + (0 if bias is None else bias)

    q = _rope_heads_first(linear(wq, bq).reshape(B, 1, HEADS, D), cos, sin).reshape(B, G, HEADS // G, D)
    k = _rope_heads_first(linear(wk, bk).reshape(B, 1, G, D), cos, sin)
    return q, reference(k_cache, k, slots), reference(v_cache, linear(wv, bv).reshape(B, G, 1, D), slots)


def _ms(arrays):
    return [None if a is None else torch_ms.tensor(a) for a in arrays]


def _project(*args):
    return F_ms.project_qkv(*args)


_project_compiled = runtime.jit(_project)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
@pytest.mark.parametrize("bias,tables,slots", [(True, 1, "shared"), (False, 1, "per_row"), (True, B, "per_row"),
                                               (False, B, "none_and_two")])
def test_project_qkv_matches_the_composite_and_numpy(rng, mode, bias, tables, slots):
    arrays = project_qkv_inputs(rng, bias, tables) + [SLOTS[slots]]
    args = _ms(arrays)
    assert fused_cache.serves_project_qkv(*args) == FUSED
    got = (_project_compiled if mode == "jit" else _project)(*args)
    for out, expected in zip(got, project_qkv_reference(*arrays)):
        np.testing.assert_allclose(out.asnumpy(), expected, rtol=1e-5, atol=1e-5)
    # the slots not written keep the caches bit for bit; against adapters' composite (GEMV,
    # rotary and write kernels) the same float operations
    unwritten = np.broadcast_to((arrays[-1] == 0).reshape(-1, 1, S, 1), got[1].shape)
    np.testing.assert_array_equal(got[1].asnumpy()[unwritten], arrays[9][unwritten])
    np.testing.assert_array_equal(got[2].asnumpy()[unwritten], arrays[10][unwritten])
    for out, composite in zip(got, _project_qkv_composite(*args)):
        np.testing.assert_array_equal(out.asnumpy(), composite.asnumpy())


@pytest.mark.parametrize("bias,tables", [(True, 1), (False, B)])
def test_project_qkv_gradient_equals_the_composite(rng, bias, tables):
    arrays = project_qkv_inputs(rng, bias, tables) + [SLOTS["none_and_two"]]
    weights = [torch_ms.tensor(rng.standard_normal(shape).astype(np.float32))
               for shape in ((B, G, HEADS // G, D), (B, G, S, D), (B, G, S, D))]

    def loss(project):
        def fn(*args):
            q, k, v = project(*args)
            return (q * weights[0]).sum() + (k * weights[1]).sum() + (v * weights[2]).sum()
        return fn

    positions = tuple(i for i, a in enumerate(arrays[:-1]) if a is not None)
    fused = mindspore.grad(loss(F_ms.project_qkv), grad_position=positions)(*_ms(arrays))
    composite = mindspore.grad(loss(_project_qkv_composite), grad_position=positions)(*_ms(arrays))
    assert len(fused) == len(composite) == len(positions)
    for i, (a, b) in enumerate(zip(fused, composite)):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5, err_msg=f"input {positions[i]}")


def test_decode_takes_project_qkv_for_plain_layers_only(rng):
    """msmm's SelfAttention.decode on MindSpore: through F.project_qkv for its own q/k/v layout
    with plain linear layers (same outputs as the unfused path), not for InternLM2's packed
    layout or a LoRA layer."""
    ms_backend.converted_models()
    modules = ms_backend._converted_sys_modules
    converted = modules["msmm.models.core.attention"]
    config = modules["msmm.models.core.config"].TransformerConfig(
        num_layers=1, hidden_size=HIDDEN, num_attention_heads=HEADS, num_query_groups=G, kv_channels=D,
        ffn_hidden_size=32, add_qkv_bias=True)
    attention = converted.SelfAttention(config)
    assert converted._project_qkv is F_ms.project_qkv and attention._fused_qkv()
    x = torch_ms.tensor(rng.standard_normal((B, 1, HIDDEN)).astype(np.float32))
    angles = rng.uniform(0, 6, (B, 1, D // 2)).astype(np.float32)
    rotary = tuple(torch_ms.tensor(f(np.concatenate([angles] * 2, -1))) for f in (np.cos, np.sin))
    slots = SLOTS["per_row"]
    mask = torch_ms.tensor(np.arange(S)[None, None, None, :] <= np.array([0, 17, S - 1])[:, None, None, None])
    cache = tuple(torch_ms.tensor(rng.standard_normal((B, G, S, D)).astype(np.float32)) for _ in range(2))
    with ms_backend.converted_in_sys_modules():
        fused_out, fused_kv = attention.decode(x, rotary, mask, cache + (torch_ms.tensor(slots),))
        attention._project_qkv_layout = False
        out, kv = attention.decode(x, rotary, mask, cache + (torch_ms.tensor(slots),))
        attention._project_qkv_layout = True
    np.testing.assert_allclose(fused_out.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(fused_kv, kv):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    internlm2 = modules["msmm.models.text.internlm2"].InternLM2Attention(config)
    assert not internlm2._fused_qkv()  # its own q/k/v layout
    attention.k_proj = modules["msmm.models.lora"].LoRALinear(attention.k_proj, r=2, alpha=4)
    assert not attention._fused_qkv()


# ---- F.swiglu_linear: SwiGLU's gate and up projections for a few rows in one kernel


def _swiglu(*args):
    return F_ms.swiglu_linear(*args)


_swiglu_compiled = runtime.jit(_swiglu)


@pytest.mark.parametrize("mode", ["pynative", "jit"])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_swiglu_linear_matches_numpy_and_the_composite(rng, mode, rows):
    x = rng.standard_normal((rows, 1, HIDDEN)).astype(np.float32)
    wg, wu = (rng.standard_normal((24, HIDDEN)).astype(np.float32) for _ in range(2))
    args = (torch_ms.tensor(x), torch_ms.tensor(wg), None, torch_ms.tensor(wu), None)
    assert fused_swiglu.serves(*args) == FUSED
    got = (_swiglu_compiled if mode == "jit" else _swiglu)(*args).asnumpy()
    a, b = x @ wg.T, x @ wu.T
    np.testing.assert_allclose(got, a / (1 + np.exp(-a)) * b, rtol=1e-5, atol=1e-5)
    composite = F_ms.silu_mul(F_ms.linear(args[0], args[1]), F_ms.linear(args[0], args[3])).asnumpy()
    np.testing.assert_array_equal(got, composite)


def test_swiglu_linear_gradient_and_fallbacks(rng):
    x = torch_ms.tensor(rng.standard_normal((2, 1, HIDDEN)).astype(np.float32))
    wg, wu = (torch_ms.tensor(rng.standard_normal((24, HIDDEN)).astype(np.float32)) for _ in range(2))
    weight = torch_ms.tensor(rng.standard_normal((2, 1, 24)).astype(np.float32))

    def loss(fused):
        def fn(x, wg, wu):
            out = F_ms.swiglu_linear(x, wg, None, wu, None) if fused else F_ms.silu_mul(F_ms.linear(x, wg),
                                                                                      F_ms.linear(x, wu))
            return (out * weight).sum()
        return fn

    grads = [mindspore.grad(loss(fused), grad_position=(0, 1, 2))(x, wg, wu) for fused in (True, False)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5)
    # more rows than the kernel takes, or biases: the composite, same values
    many = torch_ms.tensor(rng.standard_normal((9, 1, HIDDEN)).astype(np.float32))
    bias = torch_ms.tensor(rng.standard_normal(24).astype(np.float32))
    assert not fused_swiglu.serves(many, wg, None, wu, None) and not fused_swiglu.serves(x, wg, bias, wu, None)
    for args in ((many, wg, None, wu, None), (x, wg, bias, wu, None)):
        expected = F_ms.silu_mul(F_ms.linear(args[0], wg, args[2]), F_ms.linear(args[0], wu)).asnumpy()
        np.testing.assert_array_equal(F_ms.swiglu_linear(*args).asnumpy(), expected)
