"""LoRA adapters (read by ``msmm.checkpoint.peft.read_adapter``) merged into the base
checkpoint's tensors.

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose
keys are ``base_model.model.<module>.lora_A.weight`` ``[r, in]`` and ``.lora_B.weight``
``[out, r]`` (``<module>`` as named in the model in memory), plus full tensors of
``modules_to_save`` and, when ``bias`` is not ``"none"``, of biases (a LoRA layer's as
``<module>.base_layer.bias``). A merged weight is
``W + scaling * (B @ A)`` (transposed with ``fan_in_fan_out``), computed in float32 and
stored in the base tensor's dtype; ``scaling`` is ``alpha / r``, or ``alpha / sqrt(r)`` with
``use_rslora``, per module after ``rank_pattern`` / ``alpha_pattern``.
"""
from __future__ import annotations

import math
import os
import re
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..config.lora_config import suffix_matches
from .peft import ADAPTER_WEIGHTS, LORA_KEY, PREFIX, LoraAdapter
from .safetensors import FLOAT_CODES, Tensor, from_float, to_float


def merge_tensors(base: Mapping[str, Tensor], adapter: LoraAdapter,
                  resolve: Callable[[str], Optional[str]]) -> Dict[str, Tensor]:
    """The base tensors with the adapter merged in, lazily: every merged or replaced tensor
    is computed when loaded, so writing them holds one tensor at a time.

    ``resolve`` maps an adapter tensor name (``<module>.weight``, in-memory module names) to the
    base checkpoint key it changes, or None; every adapter tensor is checked before anything is
    computed."""
    config, weights = adapter.config, os.path.join(adapter.directory, ADAPTER_WEIGHTS)
    out = dict(base)
    changed: Dict[str, str] = {}  # base key -> adapter key changing it

    def target(name: str, adapter_key: str) -> Tuple[str, Tensor]:
        key = resolve(name) if name not in base else name
        if key is None or key not in base:
            saved = f" (saved name {key!r})" if key not in (None, name) else ""
            raise KeyError(f"{weights}: adapter key {PREFIX + adapter_key!r} has no base tensor {name!r}{saved} in "
                           "the base checkpoint")
        if key in changed:
            raise ValueError(f"{weights}: adapter keys {PREFIX + changed[key]!r} and {PREFIX + adapter_key!r} both "
                             f"change {key!r}")
        changed[key] = adapter_key
        return key, base[key]

    pairs: Dict[str, Dict[str, Tuple[str, Tensor]]] = {}
    full = []
    for adapter_key, tensor in adapter.tensors.items():
        match = LORA_KEY.match(adapter_key)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2)] = (adapter_key, tensor)
        elif "lora_magnitude_vector" in adapter_key:
            raise ValueError(f"{weights}: adapter key {PREFIX + adapter_key!r} is a DoRA magnitude; DoRA is not "
                             "supported by merge_lora")
        elif "lora_embedding_" in adapter_key:
            raise ValueError(f"{weights}: adapter key {PREFIX + adapter_key!r}: the target module is an Embedding, "
                             "not a Linear weight; merge_lora merges LoRA on Linear layers only")
        elif re.search(r"(^|\.)(lora_\w+|trainable_tokens_\w+)(\.|$)", adapter_key):
            raise ValueError(f"{weights}: adapter key {PREFIX + adapter_key!r} is not a plain LoRA tensor "
                             "(lora_A.weight / lora_B.weight); merge_lora does not support it")
        else:
            full.append((adapter_key, tensor))

    use_rslora = bool(config.get("use_rslora"))
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    for module, pair in pairs.items():
        for side, other in (("A", "B"), ("B", "A")):
            if other not in pair:
                raise KeyError(f"{weights}: adapter key {PREFIX + pair[side][0]!r} has no partner "
                               f"{PREFIX + module}.lora_{other}.weight")
        (a_key, a), (b_key, b) = pair["A"], pair["B"]
        key, w = target(module + ".weight", a_key)
        if len(w.shape) != 2 or w.dtype not in FLOAT_CODES:
            raise ValueError(f"{weights}: adapter key {PREFIX + a_key!r}: target module {module!r} is not a Linear "
                             f"weight (base {key!r} is {w.dtype}{list(w.shape)}); merge_lora merges LoRA on Linear "
                             "layers only")
        out_dim, in_dim = w.shape[::-1] if fan_in_fan_out else w.shape
        r = adapter.pattern_value("rank_pattern", config["r"], module)
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape != (r, in_dim) or b.shape != (out_dim, r):
            raise ValueError(
                f"{weights}: shape mismatch at {module!r}: lora_A {list(a.shape)} and lora_B {list(b.shape)} do not fit "
                f"base {key!r} {list(w.shape)} with r={r} (expected lora_A {[r, in_dim]}, lora_B {[out_dim, r]}"
                f"{', fan_in_fan_out' if fan_in_fan_out else ''})")
        for t, k in ((a, a_key), (b, b_key)):
            if t.dtype not in FLOAT_CODES:
                raise ValueError(f"{weights}: adapter key {PREFIX + k!r} has dtype {t.dtype}, expected a float type")
        alpha = adapter.pattern_value("alpha_pattern", config["lora_alpha"], module)
        scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        out[key] = Tensor(w.dtype, w.shape, _merged(w, a, b, scaling, fan_in_fan_out), f"{w.source} + LoRA {weights}")

    modules_to_save = config.get("modules_to_save") or []
    biases = config.get("bias", "none") != "none"
    for adapter_key, tensor in full:
        name = adapter_key.replace(".base_layer.", ".")  # PEFT saves a LoRA layer's bias as <module>.base_layer.bias
        parts, param = name.split("."), name.rpartition(".")[2]
        owners = [".".join(parts[:k]) for k in range(1, len(parts))]  # the modules the tensor is in
        if not (any(suffix_matches(o, m) for o in owners for m in modules_to_save) or (biases and param == "bias")):
            raise KeyError(f"{weights}: unexpected adapter key {PREFIX + adapter_key!r}: neither a LoRA tensor, nor "
                           f"under modules_to_save {modules_to_save}, nor a bias (bias={config.get('bias', 'none')!r})")
        key, w = target(name, adapter_key)
        if tensor.shape != w.shape:
            raise ValueError(f"{weights}: shape mismatch: adapter key {PREFIX + adapter_key!r} is {list(tensor.shape)}, "
                             f"base {key!r} is {list(w.shape)}")
        if tensor.dtype != w.dtype and not (tensor.dtype in FLOAT_CODES and w.dtype in FLOAT_CODES):
            raise ValueError(f"{weights}: adapter key {PREFIX + adapter_key!r} is {tensor.dtype}, base {key!r} is "
                             f"{w.dtype}")
        out[key] = Tensor(w.dtype, w.shape, _replaced(tensor, w.dtype), tensor.source)
    return out


def _merged(w: Tensor, a: Tensor, b: Tensor, scaling: float, fan_in_fan_out: bool) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        dtype = np.float64 if w.dtype == "F64" else np.float32
        delta = to_float(b.load(), b.dtype).astype(dtype, copy=False) @ to_float(a.load(), a.dtype).astype(dtype, copy=False)
        delta *= dtype(scaling)
        if fan_in_fan_out:
            delta = delta.T
        delta += to_float(w.load(), w.dtype)
        return from_float(delta, w.dtype)

    return load


def _replaced(tensor: Tensor, dtype: str) -> Callable[[], np.ndarray]:
    if tensor.dtype == dtype:
        return tensor.load
    return lambda: from_float(to_float(tensor.load(), tensor.dtype), dtype)
