"""Joining the msrun job (mccl on CPU, HCCL on Ascend) and the reductions the trainer does
over its groups: the data-parallel sum of gradients, losses and token counts, the
tensor-parallel sum of the squared norms of sharded gradients, and the pipeline-parallel sums
of the loss (which only the last stage computes) and of the squared gradient norms.

The ranks are laid out as Megatron lays them out (``parallel.layout``); the groups are
``torch.distributed`` groups of ``adapters.torch`` (so the model code's tensor-parallel
collectives and the trainer's share them) used here through their MindSpore names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, communication, nn, ops

from msmm import runtime

from .parallel.layout import ParallelLayout


@dataclass
class World:
    rank: int = 0
    size: int = 1
    layout: ParallelLayout = None  # default: data parallel over every rank
    group_names: Dict[str, str] = field(default_factory=dict)  # axis ("dp", "tp", "pp") -> MindSpore group
    pipeline_group: Any = None  # the adapters.torch ProcessGroup of the pipeline stages (point-to-point)
    _bucketed: Dict[tuple, "BucketedAllReduce"] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.layout is None:
            self.layout = ParallelLayout(self.size)

    def _coord(self, axis: str) -> int:
        return self.layout.coords(self.rank)[axis]

    @property
    def dp_rank(self) -> int:
        return self._coord("dp")

    @property
    def dp_size(self) -> int:
        return self.layout.dp

    @property
    def tp_rank(self) -> int:
        return self._coord("tp")

    @property
    def tp_size(self) -> int:
        return self.layout.tp

    @property
    def cp_rank(self) -> int:
        return self._coord("cp")

    @property
    def cp_size(self) -> int:
        return self.layout.cp

    @property
    def pp_rank(self) -> int:
        return self._coord("pp")

    @property
    def pp_size(self) -> int:
        return self.layout.pp

    @property
    def pipeline_ranks(self) -> Tuple[int, ...]:
        """The global ranks of this rank's pipeline stages, by stage."""
        return self.layout.group(self.rank, "pp")

    @property
    def writes_checkpoints(self) -> bool:
        """One replica of each model shard saves: data- and context-parallel rank 0."""
        return self.dp_rank == 0 and self.cp_rank == 0

    def _sum(self, x: Tensor, axis: str) -> Tensor:
        if len(self.layout.group(self.rank, axis)) == 1:
            return x
        return ops.AllReduce(ops.ReduceOp.SUM, self.group_names[axis])(x)

    def all_reduce_sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the data-parallel ranks (``x`` itself for one)."""
        return self._sum(x, "dp")

    def all_reduce_tensor_parallel(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the tensor-parallel ranks."""
        return self._sum(x, "tp")

    def all_reduce_context_parallel(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the context-parallel ranks (each holds a part of every sequence)."""
        return self._sum(x, "cp")

    def all_reduce_pipeline(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the pipeline stages."""
        return self._sum(x, "pp")

    def all_reduce_in_place(self, params: Sequence[Parameter], axis: str = "dp") -> None:
        """Replace each of ``params`` by its sum over the data-parallel ranks (``axis`` "tp": the
        tensor-parallel ranks): one all-reduce per flat bucket of about ``BUCKET_BYTES`` (a
        compiled graph per parameter list)."""
        if len(self.layout.group(self.rank, axis)) == 1 or not params:
            return
        key = (axis,) + tuple(id(p) for p in params)
        if key not in self._bucketed:
            self._bucketed[key] = BucketedAllReduce(params, self.group_names[axis])
        self._bucketed[key].run()

    def barrier(self) -> None:
        if self.size > 1:
            ops.AllReduce(ops.ReduceOp.SUM)(Tensor([1.0], mindspore.float32)).asnumpy()


BUCKET_BYTES = 25 * 2**20  # the size of one gradient all-reduce (as torch DDP's default bucket)


class BucketedAllReduce(nn.Cell):
    """Sums a list of parameters over a group in place, a few large all-reduces instead of
    one per parameter: consecutive parameters are packed into flat buckets of about
    ``BUCKET_BYTES``, each bucket all-reduced and written back (``ops.assign``), in one
    compiled graph. The sums are elementwise, so the result equals per-parameter all-reduces."""

    def __init__(self, params: Sequence[Parameter], group: str, bucket_bytes: int = BUCKET_BYTES) -> None:
        super().__init__()
        self.params = mindspore.ParameterTuple(params)
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM, group)
        self.sizes = tuple(int(np.prod(p.shape)) for p in params)
        self.shapes = tuple(tuple(p.shape) for p in params)
        buckets, size = [[]], 0
        for i, p in enumerate(params):
            nbytes = self.sizes[i] * np.dtype(mindspore.dtype_to_nptype(p.dtype)).itemsize
            if buckets[-1] and size + nbytes > bucket_bytes:
                buckets.append([])
                size = 0
            buckets[-1].append(i)
            size += nbytes
        self.buckets = tuple(tuple(b) for b in buckets if b)
        self.run = runtime.jit(self._reduce)

    def _reduce(self) -> Tensor:
        done = self.params[0].reshape(-1)[0:1]  # the graph's output: anything after the last write
        for bucket in self.buckets:
            flat = self.all_reduce(ops.concat([self.params[i].reshape(-1) for i in bucket]))
            offset = 0
            for i in bucket:
                ops.assign(self.params[i], flat[offset:offset + self.sizes[i]].reshape(self.shapes[i]))
                offset += self.sizes[i]
            done = flat[0:1]
        return done


def launched_by_msrun() -> bool:
    return "MS_WORKER_NUM" in os.environ and "MS_ROLE" in os.environ


def init_world(tensor_parallel: int = 1, pipeline_parallel: int = 1, virtual_pipeline: int = 1,
               sequence_parallel: bool = False, context_parallel: int = 1,
               context_attention: str = "all_gather") -> World:
    """One process, or the msrun job this process is a worker of, laid out for
    ``tensor_parallel`` x ``pipeline_parallel`` (Megatron's order): the data-, tensor- and
    pipeline-parallel groups are created, and the model code's tensor-parallel state set (before
    any model is built), with ``sequence_parallel`` (Megatron's, over the tensor-parallel ranks),
    and the context-parallel groups of ``context_parallel`` ranks (attention ``context_attention``)."""
    if not launched_by_msrun():
        if tensor_parallel != 1 or pipeline_parallel != 1 or context_parallel != 1:
            raise ValueError(f"--tensor-model-parallel-size {tensor_parallel} x --pipeline-model-parallel-size "
                             f"{pipeline_parallel} x --context-parallel-size {context_parallel} needs as many msrun "
                             "workers (one process has one rank)")
        return World()
    import adapters.torch.distributed as dist

    from msmm.models.core.context_parallel import initialize_context_parallel
    from msmm.models.core.tensor_parallel import initialize_tensor_parallel

    dist.init_process_group()
    rank, size = dist.get_rank(), dist.get_world_size()
    layout = ParallelLayout(size, tp=tensor_parallel, pp=pipeline_parallel, cp=context_parallel, vpp=virtual_pipeline)
    names, pipeline_group = {}, None
    for axis in ("dp", "tp", "pp", "cp"):
        for ranks in layout.groups(axis):
            group = dist.new_group(list(ranks)) if 1 < len(ranks) < size else None
            if rank in ranks:
                names[axis] = group.name if group is not None else communication.GlobalComm.WORLD_COMM_GROUP
                if axis == "pp":
                    pipeline_group = group
    initialize_tensor_parallel(layout.groups("tp"), sequence_parallel)
    initialize_context_parallel(layout.groups("cp"), context_attention)
    return World(rank, size, layout, names, pipeline_group)
