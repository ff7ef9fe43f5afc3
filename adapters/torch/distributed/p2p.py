"""Point-to-point: ``send``, ``recv``, ``isend``, ``irecv`` (torch.distributed's), PyNative only.

Ranks are global (as in torch); ``group`` names the communicator (default: the world).
MindSpore's ``DistCommIsend`` / ``DistCommIrecv`` kernels run on CPU (mccl) and Ascend (HCCL).
``mindspore.mint.distributed.isend`` itself cannot be used on CPU: it looks its own rank up in
``hccl_world_group`` whatever the backend; the kernels are called directly here, with the group
rank of the peer. Messages between two ranks arrive in the order they were sent (tags are not
supported, so a receiver must post its receives in the sender's order).

A send is asynchronous on mccl: ``isend`` returns before the peer receives, so two ranks may
both send before they receive. ``recv`` blocks until the data has arrived.
"""
from __future__ import annotations

from typing import Optional

from mindspore import communication
from mindspore.mint.distributed.distributed import _deal_comm_outputs
from mindspore.ops.auto_generate.gen_ops_prim import dist_comm_irecv_op, dist_comm_isend_op

from .group import ProcessGroup, _WORLD, resolve

_TAG = 0  # the kernels take a tag, which they do not support yet


class Work:
    """The handle of an asynchronous send or receive: ``wait()`` blocks until it is done."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._done = handle is None

    def wait(self, timeout: Optional[float] = None) -> bool:
        if not self._done:
            self._handle.wait()
            self._done = True
        return True

    def is_completed(self) -> bool:
        """Whether ``wait()`` has returned (the kernels give no non-blocking test)."""
        return self._done


def _peer(peer: int, group: Optional[ProcessGroup], what: str) -> tuple:
    """(MindSpore group name, the peer's rank in it) for global rank ``peer``."""
    if not _WORLD.initialized:
        raise RuntimeError(f"{what}: the default process group has not been initialized (init_process_group)")
    g = resolve(group)
    if peer not in g.ranks:
        raise ValueError(f"{what}: rank {peer} is not in {g}")
    if peer == _WORLD.default.rank:
        raise ValueError(f"{what}: rank {peer} is this process's own rank")
    name = communication.GlobalComm.WORLD_COMM_GROUP if g is _WORLD.default else g.name
    return name, communication.get_group_rank_from_world_rank(peer, name)


def isend(tensor, dst: int, group: Optional[ProcessGroup] = None, tag: int = 0) -> Work:
    """Send ``tensor`` to global rank ``dst``; returns a :class:`Work`."""
    name, rank = _peer(dst, group, "isend")
    _, handle = _deal_comm_outputs(dist_comm_isend_op(tensor, rank, name, _TAG), True)
    return Work(handle)


def irecv(tensor, src: int, group: Optional[ProcessGroup] = None, tag: int = 0) -> Work:
    """Receive into ``tensor`` (its shape and dtype must be the sent one's) from global rank ``src``."""
    name, rank = _peer(src, group, "irecv")
    _, handle = _deal_comm_outputs(dist_comm_irecv_op(tensor, _TAG, rank, name), True)
    return Work(handle)


def send(tensor, dst: int, group: Optional[ProcessGroup] = None, tag: int = 0) -> None:
    isend(tensor, dst, group, tag).wait()


def recv(tensor, src: int, group: Optional[ProcessGroup] = None, tag: int = 0) -> int:
    """Receive into ``tensor`` from global rank ``src``, blocking; returns ``src``."""
    irecv(tensor, src, group, tag).wait()
    return src
