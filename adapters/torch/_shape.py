"""Shape, indexing and joining ops of adapters.torch.

``nonzero`` and ``masked_select`` have data-dependent output shapes: they run in
PyNative and inside ``mindspore.jit`` on CPU (dynamic shape), but a graph that feeds
them into further shape arithmetic may not compile; prefer masks in model code.
"""
from __future__ import annotations

import builtins
from typing import Optional, Sequence, Union

import mindspore
from mindspore import mint, ops
from mindspore.ops import constexpr

from ..kernels import transpose as fused_transpose
from ._dispatch import kernel, register

__all__ = [
    "reshape", "permute", "transpose", "swapaxes", "swapdims", "t", "flatten", "unflatten",
    "squeeze", "unsqueeze", "repeat_interleave", "cat", "concat", "concatenate", "stack",
    "split", "chunk", "unbind", "narrow", "select", "gather", "index_select", "scatter",
    "scatter_add", "masked_select", "nonzero", "argwhere", "diagonal", "roll", "flip", "tile", "meshgrid",
    "broadcast_to", "movedim", "moveaxis", "take_along_dim", "clone", "detach",
]


def reshape(input, shape: Sequence[int]):
    return mint.reshape(input, tuple(shape))


@constexpr
def _block_swap(shape: tuple, dims: tuple):
    """(grouped shape, a, b) when ``permute(x, dims)`` is ``x.reshape(grouped).transpose(a, b)``
    reshaped to the result, else None: after merging each run of dims that stay adjacent and
    in order, the permutation swaps two groups. One swapped pair of dims is the simplest case;
    ``[N, 3, H, D] -> [3, H, N, D]`` (dims (1, 2, 0, 3), a ViT's fused qkv) is the swap of dims
    0 and 1 of ``[N, 3 * H, D]``."""
    rank = len(dims)
    if rank < 2 or len(shape) != rank:
        return None
    order = [d % rank for d in dims]
    groups = [[order[0]]]  # runs of the result whose input dims are consecutive and ascending
    for d in order[1:]:
        if d == groups[-1][-1] + 1:
            groups[-1].append(d)
        else:
            groups.append([d])
    by_input = sorted(range(len(groups)), key=lambda g: groups[g][0])  # the groups in input order
    position = {g: i for i, g in enumerate(by_input)}
    moved = [i for i in range(len(groups)) if position[i] != i]  # two: a transposition
    if len(moved) != 2:
        return None
    grouped = []
    for g in by_input:
        size = 1
        for d in groups[g]:
            size *= shape[d]
        grouped.append(size)
    return tuple(grouped), moved[0], moved[1]


@constexpr
def _permuted_shape(shape: tuple, dims: tuple) -> tuple:
    return tuple(shape[d % len(shape)] for d in dims)


@register("permute", "CPU", note="a permutation that swaps two dims or two blocks of adjacent dims: the "
                                 "transpose entry's blocked copy of the grouped shape; else mint.permute (whose "
                                 "Transpose kernel keeps an 8-byte source index per element while compiled)")
def _permute_cpu(input, dims):
    swap = _block_swap(tuple(input.shape), dims)
    if swap is not None:
        grouped, a, b = swap
        staged = input.reshape(grouped)
        if fused_transpose.supports(staged, a, b):
            return fused_transpose.swap_dims(staged, a, b).reshape(_permuted_shape(tuple(input.shape), dims))
    return mint.permute(input, dims)


@register("permute", "Ascend", tested=False)
def _permute_ascend(input, dims):
    return mint.permute(input, dims)


_permute = kernel("permute")


def permute(input, dims: Sequence[int]):
    return _permute(input, tuple(dims))


@register("transpose", "CPU", note="float32/int32 of at least 4096 elements: blocked copy (memcpy'd rows when the "
                                   "last dim stays last; adapters/kernels/csrc/transpose.cpp); else mint.transpose")
def _transpose_cpu(input, dim0, dim1):
    if fused_transpose.supports(input, dim0, dim1):
        return fused_transpose.swap_dims(input, dim0, dim1)
    return mint.transpose(input, dim0, dim1)


@register("transpose", "Ascend", tested=False)
def _transpose_ascend(input, dim0, dim1):
    return mint.transpose(input, dim0, dim1)


_transpose = kernel("transpose")


def transpose(input, dim0: int, dim1: int):
    """Swap two dims (torch meaning; ``Tensor.transpose`` in graph mode is a permutation)."""
    return _transpose(input, dim0, dim1)


swapaxes = swapdims = transpose


def t(input):
    """Transpose a 2-D tensor; 0-D and 1-D tensors are returned as they are."""
    return input if input.ndim < 2 else mint.transpose(input, 0, 1)


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    if input.ndim == 0:
        return input.reshape(1)
    return mint.flatten(input, start_dim, end_dim)


@constexpr
def _unflatten_shape(shape: tuple, dim: int, sizes: tuple) -> tuple:
    dim = dim % len(shape)
    return shape[:dim] + tuple(sizes) + shape[dim + 1:]


def unflatten(input, dim: int, sizes: Sequence[int]):
    """Split ``dim`` into ``sizes`` (one of them may be -1)."""
    return input.reshape(_unflatten_shape(tuple(input.shape), dim, tuple(sizes)))


@constexpr
def _squeezable(shape: tuple, dim) -> tuple:
    """The dims among ``dim`` (all when None) that have size 1: torch skips the others."""
    dims = range(len(shape)) if dim is None else (dim if isinstance(dim, (tuple, list)) else (dim,))
    return tuple(d % len(shape) for d in dims if len(shape) and shape[d] == 1)


def squeeze(input, dim=None):
    """Drop size-1 dims (only those in ``dim`` when given); other dims are left alone."""
    dims = _squeezable(tuple(input.shape), dim)
    return mint.squeeze(input, dims) if dims else input


def unsqueeze(input, dim: int):
    return mint.unsqueeze(input, dim)


@register("repeat_interleave", "CPU", note="legacy ops.repeat_interleave")
def _repeat_interleave_cpu(input, repeats, dim):
    if isinstance(repeats, mindspore.Tensor):
        repeats = repeats.astype(mindspore.int32)
    return ops.repeat_interleave(input, repeats, dim)


@register("repeat_interleave", "Ascend", tested=False)
def _repeat_interleave_ascend(input, repeats, dim):
    return mint.repeat_interleave(input, repeats, dim)


_repeat_interleave = kernel("repeat_interleave")


def repeat_interleave(input, repeats: Union[int, "mindspore.Tensor"], dim: Optional[int] = None, *,
                      output_size: Optional[int] = None):
    """Repeat each element ``repeats`` times (an int, or a tensor of per-element counts).

    Tensor ``repeats`` give a data-dependent length: inside ``mindspore.jit`` pass
    ``output_size`` (the total), which turns the op into a gather of static shape.
    """
    if dim is None:
        input, dim = input.reshape(-1), 0
    if isinstance(repeats, builtins.int) and repeats == 0:  # MindSpore's kernel rejects 0
        return mint.narrow(input, dim, 0, 0)
    if output_size is not None and isinstance(repeats, mindspore.Tensor):
        # output position p takes source element #{k : cumsum(repeats)[k] <= p}
        ends = ops.cumsum(repeats.reshape(-1).astype(mindspore.int64), 0)
        positions = ops.arange(0, output_size, 1, dtype=mindspore.int64)
        source = mint.sum((mint.unsqueeze(positions, 1) >= mint.unsqueeze(ends, 0)).astype(mindspore.int64), 1)
        return _index_select(input, dim, source)
    return _repeat_interleave(input, repeats, dim)


def cat(tensors: Sequence, dim: int = 0, *, out=None):
    return mint.cat(tuple(tensors), dim)


concat = concatenate = cat


@register("stack", "CPU", note="legacy ops.stack: mint.stack has no CPU kernel")
def _stack_cpu(tensors, dim):
    return ops.stack(tensors, dim)


@register("stack", "Ascend", tested=False)
def _stack_ascend(tensors, dim):
    return mint.stack(tensors, dim)


_stack = kernel("stack")


def stack(tensors: Sequence, dim: int = 0, *, out=None):
    return _stack(tuple(tensors), dim)


def split(tensor, split_size_or_sections, dim: int = 0):
    """Chunks of ``split_size`` (the last may be smaller), or of the listed ``sections``.

    ops.split, not mint.split: in PyNative (CPU, MindSpore 2.10) the gradient through a
    mint.split piece that is then transposed or permuted comes back wrong."""
    if isinstance(split_size_or_sections, (list, tuple)):
        split_size_or_sections = tuple(split_size_or_sections)
    return ops.split(tensor, split_size_or_sections, dim)


def chunk(input, chunks: int, dim: int = 0):
    """At most ``chunks`` pieces of ``ceil(size / chunks)`` along ``dim``."""
    return mint.chunk(input, chunks, dim)


def unbind(input, dim: int = 0):
    """The slices along ``dim`` (split + squeeze: mint.unbind has no CPU backward)."""
    pieces = split(input, 1, dim)
    return tuple(mint.squeeze(p, dim) for p in pieces)


def narrow(input, dim: int, start: int, length: int):
    return mint.narrow(input, dim, start, length)


def select(input, dim: int, index: int):
    return mint.squeeze(mint.narrow(input, dim, index, 1), dim)


def gather(input, dim: int, index, *, sparse_grad: bool = False, out=None):
    return mint.gather(input, dim, index)


@register("index_select", "CPU", note="legacy ops.gather: mint.index_select has no CPU kernel")
def _index_select_cpu(input, dim, index):
    return ops.gather(input, index, dim)


@register("index_select", "Ascend", tested=False)
def _index_select_ascend(input, dim, index):
    return mint.index_select(input, dim, index)


_index_select = kernel("index_select")


def index_select(input, dim: int, index, *, out=None):
    return _index_select(input, dim, index)


@register("scatter_add", "CPU", note="legacy ops.tensor_scatter_elements(reduction='add')")
def _scatter_add_cpu(input, dim, index, src):
    if tuple(src.shape) != tuple(index.shape):  # torch uses the leading index.shape block of src
        src = src[tuple(slice(0, n) for n in index.shape)]
    return ops.tensor_scatter_elements(input, index, src, dim, "add")


@register("scatter_add", "Ascend", tested=False)
def _scatter_add_ascend(input, dim, index, src):
    return mint.scatter_add(input, dim, index, src)


_scatter_add = kernel("scatter_add")


def scatter_add(input, dim: int, index, src):
    return _scatter_add(input, dim, index, src)


def scatter(input, dim: int, index, src=None, *, value=None, reduce: Optional[str] = None):
    """Write ``src`` (a tensor) or ``value`` (a scalar) at ``index`` along ``dim``;
    ``reduce="add"`` accumulates (``"multiply"`` has no MindSpore kernel)."""
    source = value if src is None else src
    if reduce is None:
        return mint.scatter(input, dim, index, source)
    if reduce != "add":
        raise NotImplementedError(f"adapters: scatter(reduce={reduce!r}) is not supported; use 'add'")
    if not isinstance(source, mindspore.Tensor):
        source = ops.fill(input.dtype, index.shape, source)
    return _scatter_add(input, dim, index, source)


def masked_select(input, mask):
    """1-D tensor of the elements where ``mask`` is True (data-dependent length)."""
    return mint.masked_select(input, mask)


def nonzero(input, *, as_tuple: bool = False):
    """Indices of the non-zero elements, ``(n, ndim)`` int64, or a tuple of ``ndim`` 1-D tensors
    with ``as_tuple=True`` (data-dependent length)."""
    indices = mint.nonzero(input)
    if as_tuple:
        return unbind(indices, 1) if input.ndim else (indices.reshape(-1),)
    return indices


def argwhere(input):
    """``nonzero(input)``: the ``(n, ndim)`` indices of the non-zero elements."""
    return nonzero(input)


def diagonal(input, offset: int = 0, dim1: int = 0, dim2: int = 1):
    """The diagonal of the ``dim1``/``dim2`` planes, appended as the last dim."""
    return ops.diagonal(input, offset, dim1, dim2)


def _roll_one(input, shift: int, dim: int):
    n = input.shape[dim]
    shift = shift % n if n else 0
    if shift == 0:
        return input
    head = mint.narrow(input, dim, n - shift, shift)
    tail = mint.narrow(input, dim, 0, n - shift)
    return mint.cat((head, tail), dim)


def roll(input, shifts, dims=None):
    """Circular shift (two slices and a cat: mint.roll has no CPU kernel)."""
    if dims is None:
        return _roll_one(input.reshape(-1), shifts if isinstance(shifts, int) else shifts[0], 0) \
            .reshape(input.shape)
    shifts = shifts if isinstance(shifts, (tuple, list)) else (shifts,)
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    for shift, dim in zip(shifts, dims):
        input = _roll_one(input, shift, dim)
    return input


def flip(input, dims: Sequence[int]):
    return mint.flip(input, tuple(dims) if isinstance(dims, (tuple, list)) else (dims,))


def tile(input, dims: Sequence[int]):
    return mint.tile(input, tuple(dims))


def meshgrid(*tensors, indexing: str = "ij"):
    """Coordinate grids; ``indexing="ij"`` (torch's default) or ``"xy"``."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    return mint.meshgrid(*tensors, indexing=indexing)


@constexpr
def _broadcast_size(shape: tuple, size: tuple) -> tuple:
    """``size`` with -1 entries taken from ``shape`` (aligned at the right)."""
    offset = len(size) - len(shape)
    return tuple(shape[i - offset] if s == -1 else s for i, s in enumerate(size))


def broadcast_to(input, size: Sequence[int]):
    return mint.broadcast_to(input, _broadcast_size(tuple(input.shape), tuple(size)))


def movedim(input, source, destination):
    return ops.movedim(input, source, destination)


moveaxis = movedim


@constexpr
def _take_shapes(input_shape: tuple, index_shape: tuple, dim: int) -> tuple:
    """Broadcast shapes of input and index for ``take_along_dim`` (all dims but ``dim``)."""
    dim = dim % len(input_shape)
    common = [builtins.max(a, b) for a, b in zip(input_shape, index_shape)]
    input_to = tuple(input_shape[i] if i == dim else n for i, n in enumerate(common))
    index_to = tuple(index_shape[i] if i == dim else n for i, n in enumerate(common))
    return input_to, index_to


def take_along_dim(input, indices, dim: Optional[int] = None, *, out=None):
    """``gather`` with broadcasting; flat indices into the flattened input when ``dim`` is None."""
    if dim is None:
        return mint.gather(input.reshape(-1), 0, indices.reshape(-1))
    input_to, index_to = _take_shapes(tuple(input.shape), tuple(indices.shape), dim)
    return mint.gather(mint.broadcast_to(input, input_to), dim, mint.broadcast_to(indices, index_to))


def clone(input, *, memory_format=None):
    """A copy with its own memory; gradients flow through it."""
    return ops.deepcopy(input)


def detach(input):
    """The same values, cut from the gradient graph."""
    return ops.stop_gradient(input)
