"""Data-parallel setup: join the msrun job (mccl on CPU, HCCL on Ascend) and sum the
gradient buffers over the ranks once per step."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import mindspore
from mindspore import Parameter, Tensor, communication, ops

BACKENDS = {"CPU": "mccl", "Ascend": "hccl"}


@dataclass
class World:
    rank: int = 0
    size: int = 1

    def all_reduce_sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the data-parallel ranks (``x`` itself for one rank)."""
        if self.size == 1:
            return x
        return ops.AllReduce(ops.ReduceOp.SUM)(x)

    def all_reduce_in_place(self, params: Sequence[Parameter]) -> None:
        """Replace each of ``params`` by its sum over the ranks (nothing for one rank)."""
        if self.size > 1:
            for p in params:
                p.copy_(self.all_reduce_sum(p))


def launched_by_msrun() -> bool:
    return "MS_WORKER_NUM" in os.environ and "MS_ROLE" in os.environ


def init_world() -> World:
    """One process, or the msrun job this process is a worker of."""
    if not launched_by_msrun():
        return World()
    device = mindspore.get_context("device_target")
    communication.init(BACKENDS.get(device, "mccl"))
    return World(communication.get_rank(), communication.get_group_size())
