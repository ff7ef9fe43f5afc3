"""The decode KV-cache write (``msmm.models.core.attention.write_cache`` for one new token,
through adapters' ``F.write_slots``: on CPU the fused kernel of ``adapters/kernels/csrc/cache.cpp``)
against numpy's ``where(slots != 0, new, cache)`` (the formula it replaces), in PyNative and
compiled: one slot for every row, per-row slots (continuous batching), slot vectors that mark
no slot or several, float16, the gradient, and msmm's ``write_cache`` on MindSpore against the
same function on real torch."""
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
from adapters.torch.nn.functional import _write_slots_composite
from msmm import runtime
from msmm.models.core import attention as attention_torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402

B, G, S, D = 3, 2, 24, 8


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
    assert fused_cache.AVAILABLE, "the fused cache kernel did not build: this test would check the composite only"
    cache, new = inputs(rng)
    slots = SLOTS[case]
    args = (torch_ms.tensor(cache), torch_ms.tensor(new), torch_ms.tensor(slots))
    assert fused_cache.serves(*args)
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
    assert converted._write_slots is F_ms.write_slots
    assert attention_torch._write_slots is None  # real torch: the select
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
