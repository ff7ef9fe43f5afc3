"""torch.distributed over ``mindspore.communication``.

Process start-up is msrun's (``msrun --worker_num=N ... python train.py``), as with
torchrun; ``init_process_group`` then joins the job. The collectives are MindSpore's
communication primitives (``AllReduce``, ``AllGather``, ``Broadcast``, ``ReduceScatter``),
which run in PyNative and compile in graph mode.

Without ``init_process_group`` (a single process, no msrun) the world has size 1 and
rank 0 and every collective is the identity, so model code written for tensor/data
parallelism runs unchanged in one process.

In-place: torch's collectives write their result into the tensor they are given; so
do these (``Tensor.copy_``, which MindSpore honours in PyNative and in graph mode), and
they also return that tensor (torch returns None). ``async_op=True`` runs the collective
at once and returns a completed work handle (``wait()`` is a no-op).
"""
from . import _functional_collectives, nn
from .collectives import (ReduceOp, all_gather, all_gather_into_tensor, all_reduce, barrier, broadcast,
                          reduce_scatter, reduce_scatter_tensor)
from .p2p import Work, irecv, isend, recv, send
from .group import (GroupMember, ProcessGroup, destroy_process_group, get_backend, get_process_group_ranks,
                    get_rank, get_world_size, group, init_process_group, is_available, is_initialized,
                    new_group)

__all__ = ["nn", "ReduceOp", "all_gather", "all_gather_into_tensor", "all_reduce", "barrier", "broadcast",
           "reduce_scatter", "reduce_scatter_tensor", "GroupMember", "ProcessGroup", "destroy_process_group",
           "get_backend", "get_process_group_ranks", "get_rank", "get_world_size", "group",
           "init_process_group", "is_available", "is_initialized", "new_group", "Work", "irecv", "isend", "recv",
           "send"]
