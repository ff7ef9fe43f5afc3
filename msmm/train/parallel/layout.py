"""How the ranks of an msrun job are arranged: Megatron's order, tensor-parallel fastest,
then context, then data, then pipeline (``tp-cp-dp-pp``)::

    rank = tp_rank + tp * (cp_rank + cp * (dp_rank + dp * pp_rank))

Framework-free: ``msmm-train --dry-run`` validates a layout without starting MindSpore.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


class LayoutError(ValueError):
    """A parallel layout that cannot run; the message names the flags and numbers."""


@dataclass(frozen=True)
class ParallelLayout:
    world_size: int
    tp: int = 1  # --tensor-model-parallel-size
    pp: int = 1  # --pipeline-model-parallel-size
    cp: int = 1  # --context-parallel-size
    vpp: int = 1  # virtual pipeline chunks per stage

    def __post_init__(self) -> None:
        for flag, value in (("--tensor-model-parallel-size", self.tp), ("--pipeline-model-parallel-size", self.pp),
                            ("--context-parallel-size", self.cp),
                            ("--virtual-pipeline-model-parallel-size", self.vpp)):
            if not isinstance(value, int) or value < 1:
                raise LayoutError(f"{flag} must be a positive integer, got {value!r}")
        if self.world_size % (self.tp * self.pp * self.cp):
            raise LayoutError(
                f"the world size {self.world_size} (msrun workers) is not divisible by --tensor-model-parallel-size "
                f"{self.tp} x --pipeline-model-parallel-size {self.pp} x --context-parallel-size {self.cp} "
                f"= {self.tp * self.pp * self.cp}")
        if self.vpp > 1 and self.pp == 1:
            raise LayoutError("virtual pipeline stages need --pipeline-model-parallel-size > 1")

    @property
    def dp(self) -> int:
        return self.world_size // (self.tp * self.pp * self.cp)

    def coords(self, rank: int) -> Dict[str, int]:
        """{"tp", "cp", "dp", "pp"}: the position of global ``rank``."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside world size {self.world_size}")
        tp, rest = rank % self.tp, rank // self.tp
        cp, rest = rest % self.cp, rest // self.cp
        dp, pp = rest % self.dp, rest // self.dp
        return {"tp": tp, "cp": cp, "dp": dp, "pp": pp}

    def rank_of(self, tp: int = 0, cp: int = 0, dp: int = 0, pp: int = 0) -> int:
        return tp + self.tp * (cp + self.cp * (dp + self.dp * pp))

    def group(self, rank: int, axis: str) -> Tuple[int, ...]:
        """The global ranks that differ from ``rank`` only along ``axis`` ("tp", "cp", "dp",
        "pp"), in order along it: the members of ``rank``'s group of that kind."""
        c = self.coords(rank)
        size = {"tp": self.tp, "cp": self.cp, "dp": self.dp, "pp": self.pp}[axis]
        return tuple(self.rank_of(**{**c, axis: i}) for i in range(size))

    def groups(self, axis: str) -> List[Tuple[int, ...]]:
        """Every group of that kind (each rank in exactly one), in order of their first rank."""
        seen: Dict[Tuple[int, ...], None] = {}
        for rank in range(self.world_size):
            seen.setdefault(self.group(rank, axis), None)
        return list(seen)
