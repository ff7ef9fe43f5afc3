"""Collectives with torch's signatures over MindSpore's communication primitives."""
from __future__ import annotations

from typing import List, Optional

import mindspore
import numpy as np
from mindspore import Tensor, ops

from .._dispatch import kernel, register
from ..autograd.grad_mode import _run_in_jit
from .group import ProcessGroup, resolve


class ReduceOp:
    """``torch.distributed.ReduceOp``: values are MindSpore's reduce names (AVG is sum / size)."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "prod"
    MAX = "max"
    MIN = "min"


_MS_REDUCE = {ReduceOp.SUM: ops.ReduceOp.SUM, ReduceOp.AVG: ops.ReduceOp.SUM, ReduceOp.PRODUCT: ops.ReduceOp.PROD,
              ReduceOp.MAX: ops.ReduceOp.MAX, ReduceOp.MIN: ops.ReduceOp.MIN}


@mindspore.jit_class
class _CompletedWork:
    """What ``async_op=True`` returns: the collective has already run."""

    def wait(self, timeout=None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def _rows(tensor: Tensor, start: int, stop: int) -> Tensor:
    """``tensor[start:stop]`` as a new tensor: a slice is a view, and ``copy_`` from a view
    into a smaller tensor fails on CPU."""
    return ops.gather(tensor, Tensor(np.arange(start, stop, dtype=np.int64)), 0)


def _finish(tensor: Tensor, result, async_op: bool):
    """torch's in-place contract: ``result`` is written into ``tensor`` (``copy_``, which
    MindSpore also honours in graph mode); ``tensor`` is returned too. ``result`` None: the
    collective was the identity (a group of one)."""
    if result is not None:
        tensor.copy_(result)
    return _CompletedWork() if async_op else tensor


def _check_member(group: ProcessGroup, what: str) -> None:
    if group.rank < 0:
        raise RuntimeError(f"torch.distributed.{what}: this rank is not a member of {group}")


@register("distributed.all_reduce", "Ascend", tested=False)
def _all_reduce_native(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    return ops.AllReduce(_MS_REDUCE[op], group.name)(tensor)


_GATHERED_REDUCE = {ReduceOp.PRODUCT: ops.prod, ReduceOp.MAX: ops.amax, ReduceOp.MIN: ops.amin}


@register("distributed.all_reduce", "CPU",
          note="sum/avg: AllReduce; max/min/product: AllGather + reduction (CPU AllReduce only sums)")
def _all_reduce_cpu(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        return ops.AllReduce(ops.ReduceOp.SUM, group.name)(tensor)
    gathered = ops.AllGather(group.name)(tensor.reshape((1,) + tuple(tensor.shape)))  # (size, *shape)
    return _GATHERED_REDUCE[op](gathered, 0)


_all_reduce_kernel = kernel("distributed.all_reduce")


def _reduce(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    if op not in _MS_REDUCE:
        raise ValueError(f"torch.distributed: unsupported ReduceOp {op!r}")
    result = _all_reduce_kernel(tensor, op, group)
    if op == ReduceOp.AVG:
        result = (result / group.size).astype(tensor.dtype)
    return result


def all_reduce(tensor: Tensor, op: str = ReduceOp.SUM, group: Optional[ProcessGroup] = None,
               async_op: bool = False):
    """Reduce ``tensor`` over the group; every rank gets the result."""
    group = resolve(group)
    _check_member(group, "all_reduce")
    return _finish(tensor, None if group.size == 1 else _reduce(tensor, op, group), async_op)


@register("distributed.all_gather", "Ascend", tested=False)
def _all_gather_native(tensor: Tensor, group: ProcessGroup) -> Tensor:
    return ops.AllGather(group.name)(tensor)


@register("distributed.all_gather", "CPU",
          note="all-reduce of zero-padded rows (exact): MindSpore's AllGather runs in the world group only on CPU")
def _all_gather_by_all_reduce(tensor: Tensor, group: ProcessGroup) -> Tensor:
    rows = tensor.shape[0]
    padding = ((group.rank * rows, (group.size - 1 - group.rank) * rows),) + ((0, 0),) * (len(tensor.shape) - 1)
    return ops.AllReduce(ops.ReduceOp.SUM, group.name)(ops.Pad(padding)(tensor))


_all_gather_kernel = kernel("distributed.all_gather")


def _gather(tensor: Tensor, group: ProcessGroup) -> Tensor:
    """Concatenation of every rank's ``tensor`` along dim 0 (rank order)."""
    return tensor if group.size == 1 else _all_gather_kernel(tensor, group)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group: Optional[ProcessGroup] = None,
                           async_op: bool = False):
    """``output_tensor`` (size * n, ...) = every rank's ``input_tensor`` (n, ...), in rank order."""
    group = resolve(group)
    _check_member(group, "all_gather_into_tensor")
    result = _gather(input_tensor, group)
    if tuple(result.shape) != tuple(output_tensor.shape):
        result = result.reshape(output_tensor.shape)
    return _finish(output_tensor, result, async_op)


def all_gather(tensor_list: List[Tensor], tensor: Tensor, group: Optional[ProcessGroup] = None,
               async_op: bool = False):
    """``tensor_list[i]`` = rank i's ``tensor`` (written in place; the list is returned).

    PyNative only: graph mode holds list elements as values, so the writes would be
    lost; use ``all_gather_into_tensor`` there.
    """
    if _run_in_jit():
        raise TypeError("torch.distributed.all_gather (list form) is not supported in graph mode: "
                        "use all_gather_into_tensor")
    group = resolve(group)
    _check_member(group, "all_gather")
    if len(tensor_list) != group.size:
        raise ValueError(f"torch.distributed.all_gather: tensor_list has {len(tensor_list)} tensors, "
                         f"the group has {group.size} ranks")
    gathered = _gather(tensor.reshape((1,) + tuple(tensor.shape)), group)  # (size, *shape)
    for i in range(group.size):
        tensor_list[i].copy_(_rows(gathered, i, i + 1).reshape(tensor.shape))
    return _CompletedWork() if async_op else tensor_list


def broadcast(tensor: Tensor, src: int, group: Optional[ProcessGroup] = None, async_op: bool = False):
    """Every rank gets global rank ``src``'s ``tensor``."""
    group = resolve(group)
    _check_member(group, "broadcast")
    if src not in group.ranks:
        raise ValueError(f"torch.distributed.broadcast: src {src} is not in {group}")
    if group.size == 1:
        return _finish(tensor, None, async_op)
    result = ops.Broadcast(group.ranks.index(src), group.name)((tensor,))[0]
    return _finish(tensor, result, async_op)


def barrier(group: Optional[ProcessGroup] = None, async_op: bool = False, device_ids=None):
    """Blocks until every rank of the group arrives (an all-reduce of one element)."""
    group = resolve(group)
    if group.size > 1:
        ops.AllReduce(ops.ReduceOp.SUM, group.name)(Tensor(np.ones((1,), np.float32))).asnumpy()
    return _CompletedWork() if async_op else None


@register("distributed.reduce_scatter", "Ascend", tested=False)
def _reduce_scatter_native(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    result = ops.ReduceScatter(_MS_REDUCE[op], group.name)(tensor)
    if op == ReduceOp.AVG:
        result = (result / group.size).astype(tensor.dtype)
    return result


@register("distributed.reduce_scatter", "CPU",
          note="all_reduce + this rank's slice: MindSpore's ReduceScatter has no CPU (mccl) kernel")
def _reduce_scatter_by_all_reduce(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    chunk = tensor.shape[0] // group.size
    return _rows(_reduce(tensor, op, group), group.rank * chunk, (group.rank + 1) * chunk)


_reduce_scatter_kernel = kernel("distributed.reduce_scatter")


def _scatter_reduced(tensor: Tensor, op: str, group: ProcessGroup) -> Tensor:
    if op not in _MS_REDUCE:
        raise ValueError(f"torch.distributed: unsupported ReduceOp {op!r}")
    if tensor.shape[0] % group.size:
        raise ValueError(f"torch.distributed.reduce_scatter: dim 0 ({tensor.shape[0]}) is not divisible by "
                         f"the group size ({group.size})")
    return tensor if group.size == 1 else _reduce_scatter_kernel(tensor, op, group)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: str = ReduceOp.SUM,  # noqa: A002
                          group: Optional[ProcessGroup] = None, async_op: bool = False):
    """``output`` (n, ...) = this rank's chunk of the reduction of ``input`` (size * n, ...)."""
    group = resolve(group)
    _check_member(group, "reduce_scatter_tensor")
    return _finish(output, _scatter_reduced(input, op, group), async_op)


def reduce_scatter(output: Tensor, input_list: List[Tensor], op: str = ReduceOp.SUM,
                   group: Optional[ProcessGroup] = None, async_op: bool = False):
    """``output`` = reduction over ranks of their ``input_list[this rank]``."""
    group = resolve(group)
    _check_member(group, "reduce_scatter")
    if len(input_list) != group.size:
        raise ValueError(f"torch.distributed.reduce_scatter: input_list has {len(input_list)} tensors, "
                         f"the group has {group.size} ranks")
    stacked = ops.concat([t.reshape((1,) + tuple(t.shape)) for t in input_list], 0)
    result = _scatter_reduced(stacked, op, group).reshape(output.shape)
    return _finish(output, result, async_op)
