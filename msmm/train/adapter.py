"""The LoRA adapter of a training run in HF PEFT's layout (``msmm.checkpoint.peft``):
written at every save, and read back into a model to continue training (``--lora-load``)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from msmm.checkpoint.peft import (ADAPTER_WEIGHTS, LORA_KEY, PREFIX, AdapterNaming, LoRAModule, read_adapter,
                                       write_adapter)

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


def _assign(param, value: np.ndarray) -> None:
    if hasattr(param, "set_data"):  # a MindSpore Parameter (model bound through the adapters)
        import mindspore

        param.set_data(mindspore.Tensor(value, dtype=param.dtype))
    else:
        import torch

        with torch.no_grad():
            param.copy_(torch.from_numpy(np.array(value)))


def load_adapter(model, path: str, naming: AdapterNaming) -> int:
    """Set the LoRA matrices and fully trained parameters of ``model`` (LoRA applied, torch or
    MindSpore-bound) from the PEFT adapter in ``path`` (written by msmm-train or by PEFT),
    named in ``naming``'s layout. Every LoRA layer of the model must be in the adapter with
    the same r and scaling; every other adapter tensor must be a trainable parameter, and
    every trainable parameter outside the LoRA layers must be in the adapter.
    Returns the number of tensors set."""
    adapter = read_adapter(path)
    config, where = adapter.config, os.path.join(adapter.directory, ADAPTER_WEIGHTS)
    if config.get("use_rslora") or config.get("fan_in_fan_out") or config.get("bias", "none") != "none":
        raise ValueError(f"{adapter.directory}: use_rslora / fan_in_fan_out / bias other than 'none' cannot be loaded "
                         "into msmm's LoRA layers")
    layers = {name: cell for name, cell in model.named_modules() if _is_lora(cell)}
    params = dict(model.named_parameters())
    done = set()
    for key, value in adapter.arrays().items():
        match = LORA_KEY.match(key)
        if match:
            module = match.group(1)
            name = naming.msmm_parameter(module + ".weight")
            layer_name = name[: -len(".weight")] if name else None
            if layer_name not in layers:
                fused = " (stored fused in this layout; loading it is not supported: merge it instead)" \
                    if module.endswith(".qkv") and naming.unfuse else ""
                raise KeyError(f"{where}: adapter key {PREFIX + key!r}: the model has no LoRA layer {layer_name!r}"
                               f"{fused}; configure LoRA on the modules the adapter targets")
            cell = layers[layer_name]
            r = adapter.pattern_value("rank_pattern", config["r"], module)
            alpha = adapter.pattern_value("alpha_pattern", config["lora_alpha"], module)
            if r != cell.r or not math.isclose(alpha / r, cell.scaling, rel_tol=1e-6):
                raise ValueError(f"{where}: {module!r} has r={r}, lora_alpha={alpha}; the model's LoRA layer "
                                 f"{layer_name!r} has r={cell.r}, lora_alpha={cell.alpha}: give the same r / lora_alpha")
            name = f"{layer_name}.lora_{match.group(2)}.weight"
        else:
            name = naming.msmm_parameter(key)
            if name not in params or not params[name].requires_grad:
                raise KeyError(f"{where}: adapter key {PREFIX + key!r} is not a trainable parameter of the model "
                               f"(msmm name {name!r}); list its module in modules_to_save")
        if tuple(params[name].shape) != value.shape:
            raise ValueError(f"{where}: adapter key {PREFIX + key!r} is {list(value.shape)}, the model's {name!r} is "
                             f"{list(params[name].shape)}")
        _assign(params[name], value)
        done.add(name)
    missing = sorted(f"{n}.lora_{s}.weight" for n in layers for s in "AB" if f"{n}.lora_{s}.weight" not in done)
    if missing:
        raise KeyError(f"{where}: the adapter has no tensors for {len(missing)} LoRA parameters of the model, e.g. "
                       f"{missing[:3]}; it was trained with other target_modules")
    untrained = sorted(n for n, p in params.items() if p.requires_grad and ".lora_" not in n and n not in done)
    if untrained:
        raise KeyError(f"{where}: the adapter has no tensors for {len(untrained)} parameters the model trains in full "
                       f"(modules_to_save, or a section not frozen), e.g. {untrained[:3]}; it was trained with other "
                       "modules_to_save / freeze settings")
    return len(done)
