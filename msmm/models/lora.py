"""LoRA (Hu et al., 2021) and QLoRA-style adapters on the linear layers of msmm models.

``LoRALinear`` replaces a linear layer (``nn.Linear``, ``ColumnParallelLinear``,
``RowParallelLinear`` at tp=1) and keeps its parameters under their old names, so HF
checkpoints still load into an adapted model:

    y = x W^T + b + scaling * lora_B(lora_A(dropout(x))),   scaling = alpha / r

``weight`` [out, in] (and ``bias``) are frozen; ``lora_A.weight`` [r, in] starts as
torch.nn.Linear's default init, ``lora_B.weight`` [out, r] at zero, so a fresh adapter
leaves the model unchanged. ``Int8LoRALinear`` / ``NF4LoRALinear`` store the frozen weight
quantized (``msmm.models.quant``) and dequantize it in ``forward``; the LoRA path is the same.

``apply_lora(root, config)`` swaps the targeted linear layers below ``root``:

* ``target_modules`` None or ``"all-linear"``: every linear layer except an output head
  (a module named ``lm_head`` or ``output``), as XTuner's default;
* a list of names: a module is targeted when its dotted name equals a listed name or ends
  with ``"." + name`` (``["q_proj", "v_proj"]``, ``["attention.q_proj"]``), as PEFT;
* any other string: a regular expression that must match the whole dotted name.

Names are msmm's module names relative to ``root``'s owner model (the HF-native names).
"""
from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from msmm.config.lora_config import ALL_LINEAR, LoRAConfig, suffix_matches

from .core import ColumnParallelLinear, RowParallelLinear
from .quant import dequantize_int8, dequantize_nf4, nf4_byte_table, quantize_int8, quantize_nf4

OUTPUT_HEADS = ("lm_head", "output")
LINEAR_TYPES = (nn.Linear, ColumnParallelLinear, RowParallelLinear)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, **storage) -> None:
        super().__init__()
        if getattr(base, "tp_size", 1) != 1:
            raise NotImplementedError(f"LoRA on a tensor-parallel linear layer (tp_size={base.tp_size}) is not supported")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.dropout_p = r, float(alpha), float(dropout)
        self.scaling = self.alpha / r
        self.bias = base.bias
        if self.bias is not None:
            self.bias.requires_grad = False
        self._store_weight(base.weight, **storage)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(self.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, self.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def _store_weight(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.weight.requires_grad = False

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The frozen weight [out, in] in ``dtype`` (the input's)."""
        return self.weight

    def frozen_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.base_weight(x.dtype), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen_linear(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, scaling={self.scaling}"


class QuantizedLoRALinear(LoRALinear):
    """LoRALinear with a quantized frozen weight whose float state (scales, code values) stays
    float32 through ``model.to(dtype)`` (``--bf16`` / ``--fp16``); it dequantizes to the
    compute dtype in ``forward``."""

    quant_state: Tuple[Tuple[str, bool], ...] = ()  # (buffer name, persistent)

    def _apply(self, fn, recurse: bool = True):
        kept = {name: getattr(self, name) for name, _ in self.quant_state}  # _apply replaces buffers
        super()._apply(fn, recurse)
        for name, persistent in self.quant_state:  # moved with the module, never cast
            self.register_buffer(name, kept[name].to(getattr(self, name).device), persistent=persistent)
        return self


class Int8LoRALinear(QuantizedLoRALinear):
    """LoRALinear whose frozen weight is int8 with a per-output-channel scale."""

    quant_state = (("weight_scale", True),)

    def _store_weight(self, weight: torch.Tensor) -> None:
        q, scale = quantize_int8(weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_int8(self.weight_int8, self.weight_scale, dtype)


class NF4LoRALinear(QuantizedLoRALinear):
    """LoRALinear whose frozen weight is NF4, blockwise absmax, two codes per byte."""

    quant_state = (("weight_absmax", True), ("byte_table", False))

    def _store_weight(self, weight: torch.Tensor, block_size: int = 64) -> None:
        packed, absmax = quantize_nf4(weight, block_size)
        self.register_buffer("weight_nf4", packed)
        self.register_buffer("weight_absmax", absmax)
        self.register_buffer("byte_table", torch.tensor(nf4_byte_table()), persistent=False)

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_nf4(self.weight_nf4, self.weight_absmax, self.byte_table,
                              (self.out_features, self.in_features), dtype)


def make_lora_layer(base: nn.Module, config: LoRAConfig) -> LoRALinear:
    if config.quantize == "nf4":
        return NF4LoRALinear(base, config.r, config.lora_alpha, config.lora_dropout, block_size=config.nf4_block_size)
    cls = Int8LoRALinear if config.quantize == "int8" else LoRALinear
    return cls(base, config.r, config.lora_alpha, config.lora_dropout)


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    """PEFT-style suffix match: ``name`` equals a pattern or ends with ``"." + pattern``."""
    return any(suffix_matches(name, p) for p in patterns)


def is_targeted(name: str, targets: Optional[Union[str, Tuple[str, ...]]]) -> bool:
    if targets is None or targets == ALL_LINEAR:
        return name.rsplit(".", 1)[-1] not in OUTPUT_HEADS
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name_matches(name, targets)


def linear_layers(model: nn.Module, roots: Iterable[nn.Module]) -> List[Tuple[str, nn.Module]]:
    """(name in ``model``, module) of the linear layers below each of ``roots``."""
    inside = {id(m) for root in roots for _, m in root.named_modules()}
    return [(n, m) for n, m in model.named_modules() if id(m) in inside and isinstance(m, LINEAR_TYPES)]


def apply_lora(model: nn.Module, roots: Sequence[nn.Module], config: LoRAConfig, where: str = "lora") -> List[str]:
    """Freeze every parameter below ``roots`` (modules of ``model``), replace the targeted
    linear layers by LoRA layers and un-freeze ``config.modules_to_save``. Returns the
    names of the adapted layers. A target list entry that matches no linear layer, or a
    ``modules_to_save`` entry that matches nothing or contains a targeted layer, is an error
    naming ``where`` (checked before the model is changed)."""
    for root in roots:
        for p in root.parameters():
            p.requires_grad = False
    candidates = linear_layers(model, roots)
    chosen = [(n, m) for n, m in candidates if is_targeted(n, config.target_modules)]
    if isinstance(config.target_modules, tuple):
        for pattern in config.target_modules:
            if not any(name_matches(n, [pattern]) for n, _ in chosen):
                raise ValueError(f"{where}.target_modules: {pattern!r} matches no linear layer here "
                                 f"(e.g. {sorted({n.rsplit('.', 1)[-1] for n, _ in candidates})})")
    if not chosen:
        raise ValueError(f"{where}.target_modules: {config.target_modules!r} matches no linear layer")
    inside = {id(m) for root in roots for _, m in root.named_modules()}
    saved = {pattern: [n for n, m in model.named_modules() if id(m) in inside and name_matches(n, [pattern])]
             for pattern in config.modules_to_save}
    for pattern, names in saved.items():
        if not names:
            raise ValueError(f"{where}.modules_to_save: {pattern!r} matches no module here")
        overlap = [n for n, _ in chosen if any(n == s or n.startswith(s + ".") for s in names)]
        if overlap:
            raise ValueError(f"{where}.modules_to_save: {pattern!r} contains LoRA target layers "
                             f"({', '.join(overlap[:4])}{', ...' if len(overlap) > 4 else ''}); a module is trained "
                             "either in full or through LoRA, not both: drop it from one of target_modules / "
                             "modules_to_save")
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make_lora_layer(module, config))
    for names in saved.values():
        for name in names:
            for p in model.get_submodule(name).parameters():
                p.requires_grad = True
    return [n for n, _ in chosen]


def lora_layers(model: nn.Module) -> List[Tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
