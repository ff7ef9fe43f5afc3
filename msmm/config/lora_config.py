"""``LoRAConfig``: one LoRA setting (a ``lora`` block of model.json, or msmm-train's --lora-*).

No torch import, so the CLI can validate it before the model code is imported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple, Union

ALL_LINEAR = "all-linear"
QUANTIZATIONS = ("int8", "nf4")


def suffix_matches(name: str, suffix: str) -> bool:
    """PEFT's rule for ``target_modules`` / ``modules_to_save`` lists: dotted ``name`` is
    selected by ``suffix`` when it equals it or ends with ``"." + suffix``."""
    return name == suffix or name.endswith("." + suffix)


@dataclass
class LoRAConfig:
    """One adapter setting, spelled as PEFT's ``LoraConfig`` (which XTuner's ``llm_lora`` /
    ``visual_encoder_lora`` are), plus ``quantize`` for a QLoRA-style base."""

    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: Optional[Union[str, Tuple[str, ...]]] = None  # None = "all-linear"
    modules_to_save: Tuple[str, ...] = ()  # modules of this section trained in full (suffix names)
    quantize: Optional[str] = None  # frozen base stored as "int8" or "nf4" (QLoRA-style)
    nf4_block_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r: must be a positive integer, got {self.r!r}")
        alpha, dropout = self.lora_alpha, self.lora_dropout
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"lora_alpha: must be a positive number, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"lora_dropout: must lie in [0, 1), got {dropout!r}")
        targets = self.target_modules
        if isinstance(targets, list):
            targets = self.target_modules = tuple(targets)
        if isinstance(targets, tuple):
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"target_modules: expected a non-empty list of module names, got {list(targets)!r}")
        elif isinstance(targets, str) and targets != ALL_LINEAR:
            try:
                re.compile(targets)
            except re.error as err:
                raise ValueError(f"target_modules: {targets!r} is not a valid regular expression ({err})") from err
        elif targets is not None and targets != ALL_LINEAR:
            raise ValueError(f"target_modules: expected null, \"all-linear\", a list of names or a regex, got {targets!r}")
        if isinstance(self.modules_to_save, str):
            raise ValueError(f"modules_to_save: expected a list of module names, got {self.modules_to_save!r}")
        self.modules_to_save = tuple(self.modules_to_save)
        if not all(isinstance(m, str) and m for m in self.modules_to_save):
            raise ValueError(f"modules_to_save: expected a list of module names, got {list(self.modules_to_save)!r}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize: must be one of {list(QUANTIZATIONS)} or null, got {self.quantize!r}")
        if isinstance(self.nf4_block_size, bool) or not isinstance(self.nf4_block_size, int) \
                or self.nf4_block_size <= 0 or self.nf4_block_size % 2:
            raise ValueError(f"nf4_block_size: must be a positive even integer, got {self.nf4_block_size!r}")

    @property
    def scaling(self) -> float:
        return float(self.lora_alpha) / self.r
