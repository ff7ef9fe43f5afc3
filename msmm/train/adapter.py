"""Writing the LoRA adapter of a training run in HF PEFT's layout (``msmm.convert.peft_adapter``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from msmm.convert.peft_adapter import AdapterNaming, LoRAModule, write_adapter

LORA_PARAMS = ("lora_A.weight", "lora_B.weight")


def _is_lora(cell) -> bool:
    return hasattr(cell, "lora_A") and hasattr(cell, "lora_B") and hasattr(cell, "scaling")


def _numpy(t) -> np.ndarray:
    return t.asnumpy() if hasattr(t, "asnumpy") else t.detach().numpy()


def lora_modules(model) -> List[LoRAModule]:
    """The LoRA layers of ``model`` (torch or MindSpore-bound) with their matrices."""
    return [LoRAModule(name, cell.r, cell.alpha, cell.dropout_p, _numpy(cell.lora_A.weight), _numpy(cell.lora_B.weight))
            for name, cell in model.named_modules() if _is_lora(cell)]


def base_and_full(model) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """(every base-model parameter name, as in the HF checkpoint before LoRA; the trainable
    parameters that are not LoRA matrices, msmm names -> arrays)."""
    lora = {name for name, cell in model.named_modules() if _is_lora(cell)}
    base, full = [], {}
    for name, p in model.named_parameters():
        owner = name.rsplit(".", 2)[0]
        if owner in lora and name.endswith(LORA_PARAMS):
            continue
        base.append(name)
        if p.requires_grad:
            full[name] = _numpy(p)
    for name in lora:
        if name + ".weight" not in base:  # a quantized base stores buffers instead
            base.append(name + ".weight")
    return base, full


@dataclass
class AdapterWriter:
    """Writes the adapter files of ``model`` into a directory (an iteration directory)."""

    model: object
    naming: AdapterNaming
    base_model_name_or_path: Optional[str] = None

    def __call__(self, directory: str) -> str:
        base, full = base_and_full(self.model)
        return write_adapter(directory, self.naming, lora_modules(self.model), full, base,
                             self.base_model_name_or_path)
