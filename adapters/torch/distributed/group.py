"""Process groups: initialisation, ranks, sizes, sub-groups."""
from __future__ import annotations

from typing import List, Optional, Sequence

from mindspore import communication

from .._dispatch import DEVICE

# torch backend name -> MindSpore backend, per device. CPU jobs (msrun on CPU) use
# MindSpore's MCCL whatever torch name the script asks for; Ascend uses HCCL.
BACKENDS = {
    "CPU": {"gloo": "mccl", "mccl": "mccl", "nccl": "mccl", "hccl": "mccl", None: "mccl"},
    "Ascend": {"hccl": "hccl", "nccl": "hccl", "gloo": "hccl", None: "hccl"},
}
# what get_backend() reports: the torch-side name of the MindSpore backend
TORCH_NAMES = {"mccl": "gloo", "hccl": "hccl"}


class ProcessGroup:
    """A set of global ranks with a MindSpore communication group name.

    Graph mode reads ``name``, ``size`` and ``rank`` as constants of the compiled graph.
    """

    def __init__(self, name: str, ranks: Sequence[int], rank: int):
        self.name = name
        self.ranks = tuple(ranks)
        self.size = len(self.ranks)
        self.rank = rank  # this process's rank inside the group, -1 if not a member

    def __repr__(self) -> str:
        return f"ProcessGroup(name={self.name!r}, ranks={list(self.ranks)})"


class _World:
    """The default group. Before ``init_process_group``: one process, rank 0."""

    def __init__(self):
        self.initialized = False
        self.backend: Optional[str] = None
        self.default = ProcessGroup("world", (0,), 0)
        self.groups: List[ProcessGroup] = []


_WORLD = _World()


class GroupMember:
    """``torch.distributed.GroupMember``: ``WORLD`` is the default group, ``NON_GROUP_MEMBER``
    marks ranks outside a group."""

    WORLD = None  # resolves to the default group wherever a group is accepted
    NON_GROUP_MEMBER = -100


class group:  # noqa: N801 - torch's spelling
    """``torch.distributed.group.WORLD``."""

    WORLD = None


def resolve(group: Optional[ProcessGroup]) -> ProcessGroup:
    """The ProcessGroup meant by ``group`` (None: the default group)."""
    return _WORLD.default if group is None else group


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return _WORLD.initialized


def init_process_group(backend: Optional[str] = None, init_method: Optional[str] = None, timeout=None,
                       world_size: int = -1, rank: int = -1, store=None, group_name: str = "",
                       pg_options=None, device_id=None) -> None:
    """Join the msrun job (``mindspore.communication.init``).

    ``backend``: torch's names are accepted and mapped per device (see ``BACKENDS``).
    ``world_size``/``rank``, if given, must agree with msrun's; ``init_method``/``store``
    are not supported (msrun provides the rendezvous).
    """
    if _WORLD.initialized:
        raise RuntimeError("trying to initialize the default process group twice")
    if init_method not in (None, "env://") or store is not None:
        raise ValueError("init_process_group: init_method/store are not supported; start the job with msrun "
                         "(msrun --worker_num=N --local_worker_num=N python script.py)")
    table = BACKENDS[DEVICE]
    key = backend.lower() if isinstance(backend, str) else backend
    if key not in table:
        raise ValueError(f"init_process_group: unknown backend {backend!r} on {DEVICE}; "
                         f"expected one of {sorted(k for k in table if k)}")
    ms_backend = table[key]
    communication.init(ms_backend)
    size, my_rank = communication.get_group_size(), communication.get_rank()
    if world_size not in (-1, size) or rank not in (-1, my_rank):
        raise ValueError(f"init_process_group: world_size={world_size}, rank={rank} disagree with the job "
                         f"(world size {size}, rank {my_rank})")
    _WORLD.initialized = True
    _WORLD.backend = ms_backend
    _WORLD.default = ProcessGroup(communication.GlobalComm.WORLD_COMM_GROUP, range(size), my_rank)


def destroy_process_group(group: Optional[ProcessGroup] = None) -> None:
    """Destroy a sub-group, or (no argument) all groups and the communication library."""
    if group is not None and group is not _WORLD.default:
        if _WORLD.initialized and group.rank >= 0 and group in _WORLD.groups:
            communication.destroy_group(group.name)
            _WORLD.groups.remove(group)
        return
    if _WORLD.initialized:
        for sub in _WORLD.groups:
            if sub.rank >= 0:
                communication.destroy_group(sub.name)
        communication.release()
    _WORLD.__init__()


def get_rank(group: Optional[ProcessGroup] = None) -> int:
    """This process's rank in ``group`` (-1 if not a member)."""
    return resolve(group).rank


def get_world_size(group: Optional[ProcessGroup] = None) -> int:
    return resolve(group).size


def get_backend(group: Optional[ProcessGroup] = None) -> str:
    if not _WORLD.initialized:
        raise RuntimeError("get_backend: the default process group has not been initialized")
    return TORCH_NAMES[_WORLD.backend]


def get_process_group_ranks(group: Optional[ProcessGroup] = None) -> List[int]:
    return list(resolve(group).ranks)


def new_group(ranks: Optional[Sequence[int]] = None, timeout=None, backend=None, pg_options=None,
              use_local_synchronization: bool = False, group_desc: Optional[str] = None) -> ProcessGroup:
    """A sub-group of the given global ranks (all ranks when None).

    As in torch, every process calls ``new_group`` with the same ranks; a process that
    is not a member gets a group whose rank is -1 and must not use it.
    """
    world = _WORLD.default
    ranks = sorted(world.ranks if ranks is None else ranks)
    if len(set(ranks)) != len(ranks) or not all(r in world.ranks for r in ranks):
        raise ValueError(f"new_group: ranks {ranks} must be distinct ranks of the world {list(world.ranks)}")
    my_global = world.rank
    my_rank = ranks.index(my_global) if my_global in ranks else -1
    if not _WORLD.initialized:
        return ProcessGroup(world.name, ranks, my_rank)
    name = "msmm_group_" + "_".join(map(str, ranks))
    sub = ProcessGroup(name, ranks, my_rank)
    if my_rank >= 0 and not any(g.name == name for g in _WORLD.groups):
        communication.create_group(name, ranks)
    _WORLD.groups.append(sub)
    return sub
