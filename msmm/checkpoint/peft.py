"""LoRA adapters in HF PEFT's file layout, named as the HF checkpoint the base came from.

    ADAPTER_DIR/
      adapter_config.json          peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
                                   rank_pattern, alpha_pattern, modules_to_save, bias "none",
                                   base_model_name_or_path, ...
      adapter_model.safetensors    base_model.model.<HF module>.lora_A.weight  [r, in]
                                   base_model.model.<HF module>.lora_B.weight  [out, r]
                                   base_model.model.<HF parameter>             (modules_to_save)

``<HF module>`` is the module's name in the checkpoint layout the base was loaded from
(``msmm.checkpoint.names``: e.g. InternVL HF-native ``language_model.model.layers.0.self_attn.q_proj``
or remote-code ``vision_model.encoder.layers.0.attn.qkv``). The delta of a module is
``(lora_alpha / r) * lora_B @ lora_A`` with the module's ``r`` / ``lora_alpha`` from
``rank_pattern`` / ``alpha_pattern`` when listed there (PEFT's rule: pattern ``p`` applies to
a module whose name matches ``(.*\\.)?(p)$``), else the top-level ones.

Where msmm keeps separate q/k/v projections but the layout fuses them (InternVL remote-code
``attn.qkv``), the three adapters are written as one of rank 3r: ``lora_A`` the three A
stacked [3r, in], ``lora_B`` block-diagonal [3 out, 3r], ``lora_alpha`` 3 alpha, so the
scaling and the delta are exactly those of the three.

``target_modules`` / ``modules_to_save`` list the shortest dotted suffixes that select exactly
the adapted / fully trained modules among all modules of the model, containers included
(PEFT matches these lists by suffix), so they hold for the checkpoint names and for the
in-memory names of transformers >= 4.52 alike; ``modules_to_save`` names whole modules
(``merger``) where all of a module's parameters are trained.
``read_adapter`` reads such a directory (ours or one HF PEFT's ``save_pretrained`` wrote),
lazily, and refuses what is not plain LoRA. Framework-free: numpy and safetensors.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from safetensors.numpy import save_file

from ..config.lora_config import suffix_matches
from .layout import resolve_load_dir
from .safetensors import FLOAT_CODES, Tensor, open_file, to_float

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_SUBDIR = "adapter"  # where an adapter may sit inside an msmm-train iteration directory
PREFIX = "base_model.model."
LORA_KEY = re.compile(r"^(.+)\.lora_([AB])\.weight$")  # (module, A or B) of an adapter tensor key
# adapter_config.json fields of LoRA variants whose merge is not W + scaling * B @ A
UNSUPPORTED_FIELDS = {
    "use_dora": "DoRA", "lora_bias": "a bias on lora_B", "use_qalora": "QA-LoRA",
    "target_parameters": "LoRA on bare parameters", "layer_replication": "layer replication",
    "trainable_token_indices": "trainable tokens", "alora_invocation_tokens": "activated LoRA (cannot be merged)",
    "arrow_config": "Arrow routing", "use_bdlora": "block-diagonal LoRA", "kasa_config": "KaSA",
    "monteclora_config": "MonteCLoRA",
}
# init_lora_weights that change the base weights: the adapter only fits the modified base
BASE_MODIFYING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
QKV_PARTS = ("q_proj", "k_proj", "v_proj")


@dataclass
class LoRAModule:
    """One adapted msmm module: its name, rank, alpha, dropout and the two matrices."""

    name: str
    r: int
    alpha: float
    dropout: float
    lora_A: np.ndarray
    lora_B: np.ndarray


class AdapterNaming:
    """msmm names -> the HF checkpoint names of one family and layout."""

    def __init__(self, model_id: str, layout: str = "hf", text_model_id: Optional[str] = None) -> None:
        from ..registry import get_family  # the registry names its tables from this package

        naming = get_family(model_id, "PEFT naming").naming
        if layout not in naming.layouts:
            raise ValueError(f"model_id {model_id!r} has no checkpoint layout {layout!r}; known: {sorted(naming.layouts)}")
        naming.groups(layout, text_model_id)  # an unknown text family fails here, not at the first name
        self.naming, self.text_family = naming, text_model_id
        self.unfuse = naming.unfused(layout)
        self.model_id, self.layout = model_id, layout

    def parameter(self, name: str) -> str:
        hf = self.naming.hf_name(name, self.layout, self.text_family)
        if hf is None:
            raise KeyError(f"{name!r} has no name in the {self.model_id} {self.layout!r} checkpoint layout")
        return hf

    def module(self, name: str) -> str:
        return self.parameter(name + ".weight")[: -len(".weight")]

    def msmm_parameter(self, hf: str) -> Optional[str]:
        """The msmm name of an adapter's parameter name (the saved checkpoint name, or the
        transformers >= 4.52 in-memory name PEFT writes), or None."""
        return self.naming.mm_name(hf, self.layout, self.text_family)

    def fused_qkv(self, name: str) -> Optional[Tuple[str, str]]:
        """(stem, part) when ``name`` (stem.q_proj / k_proj / v_proj) is stored fused as stem.qkv."""
        stem, _, part = name.rpartition(".")
        if part in QKV_PARTS and any(u.mm.match(f"{stem}.qkv.weight") for u in self.unfuse):
            return stem, part
        return None


def shortest_unique_suffixes(names: Sequence[str], others: Sequence[str]) -> List[str]:
    """The shortest dotted suffixes that together match all of ``names`` and none of
    ``others`` (PEFT's rule: suffix ``s`` matches ``n`` when ``n == s`` or ``n`` ends with ``"." + s``)."""
    out = set()
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if not any(suffix_matches(o, suffix) for o in others):
                break
        out.add(suffix)
    return sorted(out)


def _block_diag(blocks: Sequence[np.ndarray]) -> np.ndarray:
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), blocks[0].dtype)
    i = j = 0
    for b in blocks:
        out[i:i + b.shape[0], j:j + b.shape[1]] = b
        i, j = i + b.shape[0], j + b.shape[1]
    return out


def _fuse_qkv(modules: List[LoRAModule], naming: AdapterNaming) -> List[Tuple[str, LoRAModule]]:
    """(HF module name, adapter) pairs; q/k/v adapters of a fused layout combined into one."""
    out, groups = [], {}
    for m in modules:
        fused = naming.fused_qkv(m.name)
        if fused is None:
            out.append((naming.module(m.name), m))
        else:
            groups.setdefault(fused[0], {})[fused[1]] = m
    for stem, parts in groups.items():
        if set(parts) != set(QKV_PARTS):
            raise ValueError(f"{stem}: the {naming.layout!r} layout stores q/k/v fused as qkv; LoRA must target all of "
                             f"{list(QKV_PARTS)} there, got {sorted(parts)}")
        q, k, v = (parts[p] for p in QKV_PARTS)
        if not (q.r == k.r == v.r and q.alpha == k.alpha == v.alpha):
            raise ValueError(f"{stem}: q/k/v adapters of different r/alpha cannot be fused")
        fused = LoRAModule(f"{stem}.qkv", 3 * q.r, 3 * q.alpha, q.dropout,
                           np.concatenate([q.lora_A, k.lora_A, v.lora_A], axis=0),
                           _block_diag([q.lora_B, k.lora_B, v.lora_B]))
        out.append((naming.module(f"{stem}.qkv"), fused))
    return out


def write_adapter(directory: str, naming: AdapterNaming, modules: List[LoRAModule],
                  full: Mapping[str, np.ndarray], all_parameters: Sequence[str],
                  base_model_name_or_path: Optional[str] = None) -> str:
    """Write ``modules`` (and the fully trained parameters ``full``, msmm names, as PEFT's
    ``modules_to_save``) to ``directory``. Both files are written to a temporary directory
    first; a new ``directory`` is that directory renamed, an existing one (the temporary
    iteration directory of ``save_checkpoint``, itself published by one rename) receives the
    two files, and a failure removes what was written.
    ``all_parameters``: every msmm parameter name of the base model (for unique suffixes)."""
    if not modules:
        raise ValueError("no LoRA modules to write")
    pairs = _fuse_qkv(modules, naming)
    hf_params = {_fused_param(n, naming) for n in all_parameters}
    modules = sorted({".".join(p.split(".")[:k]) for p in hf_params for k in range(1, p.count(".") + 1)})
    tensors: Dict[str, np.ndarray] = {}
    for hf, m in pairs:
        tensors[f"{PREFIX}{hf}.lora_A.weight"] = np.ascontiguousarray(m.lora_A, np.float32)
        tensors[f"{PREFIX}{hf}.lora_B.weight"] = np.ascontiguousarray(m.lora_B, np.float32)
    full_hf = _full_tensors(full, naming)
    for name, value in full_hf.items():
        tensors[PREFIX + name] = np.ascontiguousarray(value)
    settings = Counter((m.r, m.alpha) for _, m in pairs)
    (top_r, top_alpha), _ = settings.most_common(1)[0]
    rank_pattern, alpha_pattern = {}, {}
    for r, alpha in settings:  # modules whose r / alpha differ from the top-level ones
        if (r, alpha) != (top_r, top_alpha):
            group = {hf for hf, m in pairs if (m.r, m.alpha) == (r, alpha)}
            for suffix in shortest_unique_suffixes(sorted(group), [o for o in modules if o not in group]):
                rank_pattern[re.escape(suffix)], alpha_pattern[re.escape(suffix)] = r, alpha
    targeted = {hf for hf, _ in pairs}
    saved = _whole_modules(set(full_hf), hf_params)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": top_r,
        "lora_alpha": top_alpha,
        "lora_dropout": max(m.dropout for _, m in pairs),
        "target_modules": shortest_unique_suffixes(sorted(targeted), [o for o in modules if o not in targeted]),
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": shortest_unique_suffixes(sorted(saved), [o for o in modules if o not in saved]) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "revision": None,
    }
    tmp = f"{os.path.abspath(directory)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    published = []
    try:
        save_file(tensors, os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(tmp, ADAPTER_CONFIG), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):  # complete on disk before they take their names
            with open(os.path.join(tmp, name), "rb+") as f:
                os.fsync(f.fileno())
        if os.path.isdir(directory):  # save_checkpoint's temporary iteration directory, published as a whole
            for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
                os.replace(os.path.join(tmp, name), os.path.join(directory, name))
                published.append(os.path.join(directory, name))
            os.rmdir(tmp)
        else:  # a standalone adapter directory appears complete or not at all
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in published:
            os.remove(path)
        raise
    return directory


def _whole_modules(saved: set, params: set) -> set:
    """The largest modules all of whose parameters are in ``saved`` (``visual.merger`` rather
    than its layers), each saved parameter covered by one."""
    out = set()
    for name in saved:
        parts, best = name.split("."), name.rpartition(".")[0]
        for k in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:k]) + "."
            if all(p in saved for p in params if p.startswith(prefix)):
                best = prefix[:-1]
            else:
                break
        out.add(best)
    return out


def _fused_param(name: str, naming: AdapterNaming) -> str:
    """HF name of an msmm parameter, q/k/v pieces of a fused layout named as the fused tensor."""
    module, _, param = name.rpartition(".")
    fused = naming.fused_qkv(module)
    return naming.parameter(f"{fused[0]}.qkv.{param}" if fused else name)


def _full_tensors(full: Mapping[str, np.ndarray], naming: AdapterNaming) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    pieces: Dict[str, Dict[str, np.ndarray]] = {}
    for name, value in full.items():
        module, _, param = name.rpartition(".")
        fused = naming.fused_qkv(module)
        if fused is None:
            out[naming.parameter(name)] = value
        else:
            pieces.setdefault(f"{fused[0]}.qkv.{param}", {})[fused[1]] = value
    for name, parts in pieces.items():
        if set(parts) != set(QKV_PARTS):
            raise ValueError(f"{name}: stored fused; q/k/v must all be trained in full or all frozen")
        out[naming.parameter(name)] = np.concatenate([parts[p] for p in QKV_PARTS], axis=0)
    return out


@dataclass
class LoraAdapter:
    """An adapter directory as read: adapter_config.json and the tensors, loaded on demand."""

    directory: str
    config: dict
    tensors: Dict[str, Tensor]  # keys without the ``base_model.model.`` prefix

    def pattern_value(self, field: str, default: float, module: str) -> float:
        """``rank_pattern`` / ``alpha_pattern`` value of ``module`` (first pattern matching a
        dotted suffix of the module name), else ``default``."""
        for pattern, value in (self.config.get(field) or {}).items():
            try:
                if re.match(rf"(.*\.)?({pattern})$", module):
                    return value
            except re.error as err:
                raise ValueError(f"{os.path.join(self.directory, ADAPTER_CONFIG)}: {field} key {pattern!r} is not a "
                                 f"regular expression ({err})") from err
        return default

    def arrays(self) -> Dict[str, np.ndarray]:
        """Every tensor loaded (floats as float32/float64 numpy arrays)."""
        return {k: to_float(t.load(), t.dtype) if t.dtype in FLOAT_CODES else np.asarray(t.load())
                for k, t in self.tensors.items()}


def find_adapter_dir(path: str) -> str:
    """``path`` if it holds ``adapter_config.json``; for an msmm-train checkpoint (``SAVE``, or
    ``SAVE/iter_N``) the iteration directory the tracker names if the adapter files are there,
    else its ``adapter/`` subdirectory."""
    if os.path.isfile(os.path.join(path, ADAPTER_CONFIG)):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"lora_dir {path}: no such directory")
    try:
        iteration = resolve_load_dir(path)
    except (FileNotFoundError, ValueError):
        raise FileNotFoundError(f"lora_dir {path}: no {ADAPTER_CONFIG} (and not an msmm-train checkpoint)") from None
    for candidate in (iteration, os.path.join(iteration, ADAPTER_SUBDIR)):
        if os.path.isfile(os.path.join(candidate, ADAPTER_CONFIG)):
            return candidate
    raise FileNotFoundError(f"lora_dir {path}: the msmm-train checkpoint {iteration} holds no {ADAPTER_CONFIG} "
                            f"(nor does its {ADAPTER_SUBDIR}/): was it trained with LoRA?")


def read_adapter(path: str) -> LoraAdapter:
    """The adapter in ``path`` (see ``find_adapter_dir``); errors name the file and key."""
    directory = find_adapter_dir(path)
    config_path = os.path.join(directory, ADAPTER_CONFIG)
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    _check_config(config, config_path)
    weights = os.path.join(directory, ADAPTER_WEIGHTS)
    if not os.path.isfile(weights):
        hint = " (found adapter_model.bin: pickles are not read; save with safe_serialization=True)" \
            if os.path.isfile(os.path.join(directory, "adapter_model.bin")) else ""
        raise FileNotFoundError(f"{directory}: no {ADAPTER_WEIGHTS}{hint}")
    tensors = {}
    for key, tensor in open_file(weights).items():
        if not key.startswith(PREFIX):
            raise KeyError(f"{weights}: adapter key {key!r} does not start with {PREFIX!r} (not a PEFT adapter file)")
        tensors[key[len(PREFIX):]] = tensor
    return LoraAdapter(directory, config, tensors)


def _check_config(config: dict, where: str) -> None:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{where}: peft_type {peft_type!r}: msmm reads LoRA adapters only (peft_type 'LORA')")
    for field, what in UNSUPPORTED_FIELDS.items():
        if config.get(field):
            raise ValueError(f"{where}: {field}={config[field]!r}: {what} is not supported "
                             "(plain LoRA only: W + scaling * B @ A)")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_MODIFYING_INITS):
        raise ValueError(f"{where}: init_lora_weights={init!r} changes the base weights, so the adapter does not fit "
                         "the original base; save it converted (PEFT save_pretrained with "
                         "path_initial_model_for_weight_conversion) and use that")
    for field in ("r", "lora_alpha"):
        value = config.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{where}: {field} must be a positive number, got {value!r}")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise ValueError(f"{where}: bias {config.get('bias')!r}: expected 'none', 'all' or 'lora_only'")
