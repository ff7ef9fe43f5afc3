"""Learning-rate schedules with Megatron's semantics (``OptimizerParamScheduler``).

Steps count optimizer updates. With ``warmup_steps = lr_warmup_fraction * decay_steps``
(``decay_steps`` defaults to ``--train-iters``), the LR of the update taken at step ``s``
(0-based: the first update uses ``s = 0``) is:

* warmup, ``s <= warmup_steps``: ``init_lr + (max_lr - init_lr) * s / warmup_steps``
  (so the very first update has ``init_lr``, 0 by default, as in Megatron);
* after ``decay_steps``: ``min_lr``;
* between: ``min_lr + coeff * (max_lr - min_lr)`` with ``r = (s - warmup) / (decay - warmup)``
  and ``coeff`` = ``1 - r`` (linear), ``0.5 * (cos(pi r) + 1)`` (cosine), or 1 (constant,
  which ignores ``min_lr``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DECAY_STYLES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    max_lr: float
    min_lr: float
    decay_steps: int
    warmup_steps: float = 0  # fraction * decay steps, not rounded (as Megatron)
    decay_style: str = "linear"
    init_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.decay_style not in DECAY_STYLES:
            raise ValueError(f"lr decay style must be one of {DECAY_STYLES}, got {self.decay_style!r}")
        if self.min_lr > self.max_lr:
            raise ValueError(f"min lr {self.min_lr} is larger than lr {self.max_lr}")
        if not 0 <= self.warmup_steps <= self.decay_steps:
            raise ValueError(f"warmup steps {self.warmup_steps} must lie in [0, decay steps {self.decay_steps}]")

    @classmethod
    def from_fraction(cls, max_lr: float, min_lr: float, decay_steps: int, warmup_fraction: float,
                      decay_style: str) -> "LRSchedule":
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ValueError(f"lr warmup fraction must lie in [0, 1], got {warmup_fraction}")
        return cls(max_lr, min_lr, decay_steps, warmup_fraction * decay_steps, decay_style)

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step <= self.warmup_steps:
            return self.init_lr + (self.max_lr - self.init_lr) * step / self.warmup_steps
        if self.decay_style == "constant":
            return self.max_lr
        if step > self.decay_steps:
            return self.min_lr
        ratio = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        coeff = 1.0 - ratio if self.decay_style == "linear" else 0.5 * (math.cos(math.pi * ratio) + 1.0)
        return self.min_lr + coeff * (self.max_lr - self.min_lr)
