"""The fused CPU transpose (adapters/kernels/transpose.py) behind adapters' ``torch.transpose``,
``swapaxes`` and ``permute`` (a permutation that swaps two dims) against real torch, values and
gradients, in PyNative and under ``mindspore.jit``, through the fused kernel and through the
``mint`` kernels it falls back to: several ranks and dim pairs (memcpy'd rows, short rows in
tiles, the last dim swapped), permutations that swap two blocks of dims (``permute`` and the
``Tensor.permute`` rewrite), non-contiguous inputs, int32, and the calls left to ``mint``
(small tensors, other dtypes, other permutations)."""
from typing import Callable

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import mint

import adapters.torch as torch_ms
from adapters.kernels import transpose as fused_transpose
from adapters.torch import _shape
from tests.adapters.harness import MODES, check_function, randn

pytestmark = pytest.mark.skipif(not fused_transpose.AVAILABLE, reason="fused kernels off or not buildable")

_KEEP: list = []  # compiled callables live for the session (MindSpore caches graphs by id())

# name -> (input shape, dim0, dim1); every one at least MIN_ELEMENTS elements
SWAPS = {
    "attention_heads_first": ((2, 40, 4, 32), 1, 2),     # [B, L, H, D] -> [B, H, L, D]: rows of D
    "attention_back_negative": ((2, 4, 40, 32), -3, -2),
    "last_two": ((2, 3, 40, 37), -1, -2),                 # C = 1: tiles, ragged edges
    "outer_with_between": ((6, 5, 7, 4, 9), 0, 3),        # M > 1, C = 9
    "short_rows": ((3, 70, 10, 2), 1, 2),                 # C = 2: tiles of 2-element items
    "matrix": ((70, 90), 0, 1),
    "rank3_reversed_args": ((50, 7, 20), 2, 0),
}


def _fused_transpose(x, d0, d1):
    assert fused_transpose.supports(x, d0, d1)
    return torch_ms.transpose(x, d0, d1)


def _fused_swapaxes(x, d0, d1):
    assert fused_transpose.supports(x, d0, d1)
    return torch_ms.swapaxes(x, d0, d1)


def _fused_permute(x, d0, d1):
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    assert fused_transpose.supports(x, d0, d1)
    return torch_ms.permute(x, dims)


def _fallback(x, d0, d1):
    return mint.transpose(x, d0, d1)


PATHS = {"transpose": _fused_transpose, "swapaxes": _fused_swapaxes, "permute": _fused_permute,
         "fallback": _fallback}


def _torch_transpose(x, d0, d1):
    return x.transpose(d0, d1)


def _check(fn: Callable, ref: Callable, x: np.ndarray, args: tuple, mode: str, prepare=None) -> None:
    """fn(x, *args) equals ref(x, *args) exactly, values and gradients; ``prepare`` (MindSpore,
    torch) turns the input into what fn and ref receive (a non-contiguous view) inside the
    differentiated call."""
    ms_prepare, torch_prepare = prepare or (None, None)

    def run(x):
        return fn(x if ms_prepare is None else ms_prepare(x), *args)

    def reference(x):
        return ref(x if torch_prepare is None else torch_prepare(x), *args)

    check_function(run, reference, [x], mode, rtol=0, atol=0, seed=9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(SWAPS))
def test_swap_matches_torch(case, path, mode):
    shape, d0, d1 = SWAPS[case]
    _check(PATHS[path], _torch_transpose, randn(*shape), (d0, d1), mode)


def _ms_transposed_view(x):  # a strided view in PyNative (mint's TransposeExtView), [4, 40, 2, 32]
    return mint.transpose(x, 0, 2)


def _torch_transposed_view(x):
    return x.transpose(0, 2)


def _ms_slice(x):  # x[:, 1:] of [2, 41, 4, 32]: not contiguous
    return x[:, 1:]


def _torch_slice(x):
    return x[:, 1:]


NON_CONTIGUOUS = {"transposed_view": ((2, 40, 4, 32), (_ms_transposed_view, _torch_transposed_view)),
                  "slice": ((2, 41, 4, 32), (_ms_slice, _torch_slice))}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(NON_CONTIGUOUS))
def test_non_contiguous_input(case, mode):
    shape, prepare = NON_CONTIGUOUS[case]
    _check(_fused_transpose, _torch_transpose, randn(*shape), (1, 2), mode, prepare)


def _int_transpose(x):
    return torch_ms.transpose(x, 1, 2)


@pytest.mark.parametrize("mode", MODES)
def test_int32(mode):
    x = np.arange(2 * 40 * 4 * 32, dtype=np.int32).reshape(2, 40, 4, 32)
    assert fused_transpose.supports(ms.Tensor(x), 1, 2)
    run = ms.jit(_int_transpose) if mode == "graph" else _int_transpose
    _KEEP.append(run)
    np.testing.assert_array_equal(run(ms.Tensor(x)).asnumpy(), np.swapaxes(x, 1, 2))


def _general_permute(x):
    return torch_ms.permute(x, (2, 0, 3, 1))


def _torch_general_permute(x):
    return x.permute(2, 0, 3, 1)


# name -> (input shape, dims): permutations that swap two blocks of adjacent dims, which the
# fused kernel serves on the grouped shape ([N, 3, H, D] -> [3, H, N, D] is [N, 3H, D]'s
# swap of dims 0 and 1), and their grouped shape and swapped pair
BLOCK_SWAPS = {
    "vit_qkv_heads_first": ((40, 3, 4, 32), (1, 2, 0, 3), ((40, 12, 32), 0, 1)),
    "blocks_of_two": ((3, 5, 7, 11, 4), (2, 3, 0, 1, 4), ((15, 77, 4), 0, 1)),
    "block_with_between": ((4, 6, 5, 7, 8), (3, 4, 2, 0, 1), ((24, 5, 56), 0, 2)),
    "negative_dims": ((40, 3, 4, 32), (-3, -2, -4, -1), ((40, 12, 32), 0, 1)),
}


def _block_permute(x, dims):
    return torch_ms.permute(x, dims)


def _torch_block_permute(x, dims):
    return x.permute(*dims)


def _method_permute(x, dims):  # x.permute(*dims) as auto_convert rewrites it
    return torch_ms.tensor_methods.permute(x, *dims)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [_block_permute, _method_permute])
@pytest.mark.parametrize("case", list(BLOCK_SWAPS))
def test_block_swap_permute_matches_torch(case, fn, mode):
    shape, dims, (grouped, a, b) = BLOCK_SWAPS[case]
    assert _shape._block_swap(shape, dims) == (grouped, a, b)
    assert fused_transpose.supports(ms.Tensor(randn(*grouped)), a, b)
    _check(fn, _torch_block_permute, randn(*shape), (dims,), mode)


def test_block_swap_plan():
    """Which permutations are one swap of blocks: not the identity, a rotation of three
    blocks, nor a reversal of four dims."""
    assert _shape._block_swap((2, 3, 4, 5), (0, 1, 2, 3)) is None
    assert _shape._block_swap((2, 3, 4, 5), (1, 2, 0, 3)) == ((2, 12, 5), 0, 1)
    assert _shape._block_swap((2, 3, 4, 5), (2, 0, 1, 3)) == ((6, 4, 5), 0, 1)
    assert _shape._block_swap((2, 3, 4, 5), (1, 2, 3, 0)) == ((2, 60), 0, 1)
    assert _shape._block_swap((2, 3, 4, 5), (2, 0, 3, 1)) is None
    assert _shape._block_swap((2, 3, 4, 5), (3, 2, 1, 0)) is None
    assert _shape._block_swap((2, 3, 4), (1, 2, 0, 3)) is None  # rank mismatch


@pytest.mark.parametrize("mode", MODES)
def test_left_to_mint(mode):
    """Small tensors, float64 and permutations that are not one swap of two blocks of dims
    keep mint's kernels, and still match torch."""
    small, big = ms.Tensor(randn(2, 3, 4, 5)), ms.Tensor(randn(2, 40, 4, 32))
    assert not fused_transpose.supports(small, 1, 2)
    assert not fused_transpose.supports(big.astype(ms.float64), 1, 2)
    assert not fused_transpose.supports(big, 1, 1)
    assert not fused_transpose.supports(ms.Tensor(randn(1, 4000, 4)), 0, 1)  # a size-1 dim: a reshape
    _check(torch_ms.transpose, _torch_transpose, randn(2, 3, 4, 5), (1, 2), mode)
    _check(_general_permute, _torch_general_permute, randn(2, 40, 4, 32), (), mode)
    x = randn(2, 40, 4, 32).astype(np.float64)
    np.testing.assert_array_equal(torch_ms.transpose(ms.Tensor(x), 1, 2).asnumpy(), np.swapaxes(x, 1, 2))


def _two_ways(x):
    """Both directions around attention in one graph: to head-major and back."""
    heads_first = torch_ms.transpose(x, 1, 2)
    return torch_ms.transpose(heads_first * 2.0, 1, 2) + torch_ms.transpose(heads_first, 1, 2).sum()


def _torch_two_ways(x):
    heads_first = x.transpose(1, 2)
    return (heads_first * 2.0).transpose(1, 2) + heads_first.transpose(1, 2).sum()


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_in_one_graph(mode):
    check_function(_two_ways, _torch_two_ways, [randn(2, 40, 4, 32)], mode, rtol=1e-5, atol=1e-3)
