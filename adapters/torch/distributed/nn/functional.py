"""``torch.distributed.nn.functional``: collectives that return a new tensor instead of
writing into their argument, and are differentiable (the gradient of a sum over the group
is the sum of the gradients over the group: MindSpore's ``AllReduce`` gradient).

Being functional they are the safe spelling inside graph-mode code that must not mutate
its inputs, such as a custom ``backward``."""
from __future__ import annotations

from typing import Optional

from mindspore import Tensor

from ..collectives import ReduceOp, _reduce
from ..group import ProcessGroup, resolve


def all_reduce(tensor: Tensor, op: str = ReduceOp.SUM, group: Optional[ProcessGroup] = None) -> Tensor:
    """The reduction of ``tensor`` over the group (``tensor`` itself for a group of one)."""
    group = resolve(group)
    if group.rank < 0:
        raise RuntimeError(f"torch.distributed.nn.functional.all_reduce: this rank is not a member of {group}")
    return tensor if group.size == 1 else _reduce(tensor, op, group)


__all__ = ["all_reduce"]
