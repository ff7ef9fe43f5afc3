"""``torch.distributed._functional_collectives``: all-gather and reduce-scatter along any
dimension that return a new tensor (nothing is written into an argument), the spelling
Megatron-style sequence-parallel regions need inside graph-mode code and custom backwards.

Both move ``dim`` to the front, run the dim-0 collective of the device's dispatch (native
``AllGather`` / ``ReduceScatter`` on Ascend; on CPU, where mccl has them in no sub-group, the
exact fallbacks: an all-reduce of zero-padded rows, an all-reduce and this rank's slice) and
move it back. A group of one is the identity."""
from __future__ import annotations

from typing import Optional

from mindspore import Tensor, ops

from .collectives import _gather, _scatter_reduced
from .group import ProcessGroup, resolve


def _swap_front(tensor: Tensor, dim: int) -> Tensor:
    """``tensor`` with dims 0 and ``dim`` exchanged (its own inverse)."""
    if dim == 0:
        return tensor
    perm = list(range(len(tensor.shape)))
    perm[0], perm[dim] = dim, 0
    return ops.Transpose()(tensor, tuple(perm))


def all_gather_single(self: Tensor, gather_dim: int, group: Optional[ProcessGroup], tag: str = "") -> Tensor:
    """Every rank's ``self`` concatenated along ``gather_dim``, in rank order."""
    group = resolve(group)
    if group.size == 1:
        return self
    dim = gather_dim % len(self.shape)
    return _swap_front(_gather(_swap_front(self, dim), group), dim)


def reduce_scatter_single(self: Tensor, reduceOp: str, scatter_dim: int, group: Optional[ProcessGroup],  # noqa: N803
                          tag: str = "") -> Tensor:
    """This rank's chunk along ``scatter_dim`` of the reduction (``reduceOp``, e.g. "sum") of
    ``self`` over the group."""
    group = resolve(group)
    if group.size == 1:
        return self
    dim = scatter_dim % len(self.shape)
    return _swap_front(_scatter_reduced(_swap_front(self, dim), reduceOp, group), dim)


# the names before torch 2.13 (which keeps them, deprecated)
all_gather_tensor, reduce_scatter_tensor = all_gather_single, reduce_scatter_single

__all__ = ["all_gather_single", "all_gather_tensor", "reduce_scatter_single", "reduce_scatter_tensor"]
