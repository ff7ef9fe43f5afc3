"""Models from their files: built from ``model.json`` or ``config.json``, weights loaded from
an HF checkpoint directory or an MM checkpoint, for any family of ``msmm.registry``.

    model = from_pretrained("ckpt/InternVL2-2B")            # HF directory, any family
    model = from_pretrained("save/qwen2vl_mm")              # MM checkpoint (mm-convert / msmm-train)
    model = build_model(load_model_config("model.json"))    # model.json, sections frozen as configured
    load_pretrained(model, config, "ckpt/Qwen2-VL-7B")       # msmm-train --load of an HF directory

Reading, renaming and checking tensors is ``msmm.checkpoint``'s (framework-free); this module
only turns the checked arrays into the ``torch`` the model files bind (real torch, or
``adapters.torch`` on MindSpore).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Dict, List, Mapping, Optional, Pattern

import torch
import torch.nn as nn

from msmm.checkpoint.hf import load_config, read_hf_tensors
from msmm.checkpoint.layout import is_mm_checkpoint, resolve_load_dir
from msmm.checkpoint.load import match_state
from msmm.checkpoint.mm import HF_CONFIG_DIR, read_mm
from msmm.checkpoint.names import TEXT_NAMINGS
from msmm.checkpoint.parallel import shard_tensors
from msmm.checkpoint.safetensors import Tensor
from msmm.registry import (FAMILIES, TEXT_DECODER, VISION_ENCODER, FamilySpec, family_of_hf_config, get_family,
                           text_section)

from .core import TransformerConfig
from .core.tensor_parallel import tensor_parallel_rank, tensor_parallel_size
from .lora import apply_lora
from .core.rope_scaling import parse_rope_scaling
from .text.decoder import HF_TEXT_KEYS, hf_rope_scaling
from .model_config import COMPONENTS, ModelConfig, ModelConfigError, check_same_architecture

# the model file of each registry entry (``FamilySpec.model_module``), imported with this
# package (so under the auto_convert hook, or adapters.meta_torch, it binds the same torch)
MODEL_FILES = {spec.model_module: importlib.import_module(f".{spec.model_module}", __package__)
               for spec in FAMILIES.values()}


def model_file(spec: FamilySpec) -> Any:
    return MODEL_FILES[spec.model_module]


def section_modules(model: nn.Module, spec: FamilySpec, section: str) -> List[nn.Module]:
    """The modules a model.json section covers (what its ``freeze`` and ``lora`` apply to)."""
    modules = []
    for path in spec.freeze[section]:
        module = model
        for part in path.split("."):
            module = getattr(module, part)
        modules.append(module)
    return modules


def build_model(config: ModelConfig) -> nn.Module:
    """The model of a validated ``model.json``, with requires_grad=False on frozen sections."""
    spec = get_family(config.model_id)
    model = model_file(spec).from_model_json(config)
    for path, section in config.sections.items():
        if section.freeze:
            for module in section_modules(model, spec, path):
                for p in module.parameters():
                    p.requires_grad = False
    return model


def apply_lora_config(model: nn.Module, config: ModelConfig) -> Dict[str, list]:
    """Put LoRA layers on every section with a ``lora`` block (after pretrained weights are
    loaded: a quantized base is quantized from them). The section's base weights are frozen
    whatever its ``freeze``; its adapters (and ``modules_to_save``) train. Returns
    {section path: adapted module names}."""
    spec = get_family(config.model_id)
    adapted = {}
    for path, section in config.sections.items():
        if section.lora is not None:
            try:
                adapted[path] = apply_lora(model, section_modules(model, spec, path), section.lora, where=f"{path}.lora")
            except ValueError as err:
                raise ModelConfigError(f"{config.source}: {err}") from err
    return adapted


def check_text_decoder(config: ModelConfig, hf: Mapping[str, Any], where: str) -> None:
    """The text numbers that loading cannot catch (a wrong RoPE base, scaling or norm epsilon
    loads fine) must equal the checkpoint's: each ``text_decoder`` field against the key of the
    ``text_config`` (HF-native), ``llm_config`` (InternVL remote code) or, without either, the
    top level (Qwen2-VL / Qwen2.5-VL ``config.json``) that ``config.json`` has. Keys the
    checkpoint leaves to its defaults are not checked; ``rope_scaling`` always is (none = plain)."""
    prefix, text = text_section(hf)
    if TEXT_DECODER not in config.sections:
        return
    ours = TransformerConfig(**config.sections[TEXT_DECODER].config)
    for field, key in HF_TEXT_KEYS.items():
        if text.get(key) is not None:
            _compare(config, f"text_decoder.{field}", getattr(ours, field), where, f"{prefix}{key}", text[key])
    try:
        theirs = parse_rope_scaling(hf_rope_scaling(text), text.get("max_position_embeddings"), "rope_scaling")
    except ValueError as err:
        raise ModelConfigError(f"{where}: {prefix}{err}") from err
    if ours.rope() != theirs:
        raise ModelConfigError(
            f"{config.source}: text_decoder.rope_scaling is {ours.rope_scaling!r} (max_position_embeddings "
            f"{ours.max_position_embeddings}), but {where} has {prefix}rope_scaling = {text.get('rope_scaling')!r} "
            f"({prefix}max_position_embeddings {text.get('max_position_embeddings')}); make model.json match the "
            "checkpoint")


# vision_encoder field -> the keys of a config.json ``vision_config`` that may hold it (the
# numbers loading cannot catch: head count and norm epsilon leave every shape as it is)
HF_VISION_KEYS = {"num_attention_heads": ("num_attention_heads", "num_heads"), "layernorm_epsilon": ("layer_norm_eps",),
                  "window_size": ("window_size",), "fullatt_block_indexes": ("fullatt_block_indexes",),
                  "tokens_per_second": ("tokens_per_second",)}


def check_vision_encoder(config: ModelConfig, hf: Mapping[str, Any], where: str) -> None:
    """``check_text_decoder`` for the vision tower: each field of ``HF_VISION_KEYS`` the
    section's model takes (model.json's value or its default) against ``vision_config``."""
    section, vision = config.sections.get(VISION_ENCODER), hf.get("vision_config")
    if section is None or not isinstance(vision, Mapping):
        return
    defaults = {f.name: f.default for f in dataclasses.fields(COMPONENTS[VISION_ENCODER][section.model_id][0])}
    for field, keys in HF_VISION_KEYS.items():
        key = next((k for k in keys if vision.get(k) is not None), None)
        if field in defaults and key is not None:
            _compare(config, f"{VISION_ENCODER}.{field}", section.config.get(field, defaults[field]), where,
                     f"vision_config.{key}", vision[key])


def check_checkpoint_numbers(config: ModelConfig, hf: Mapping[str, Any], where: str) -> None:
    """The text and vision numbers of model.json against the checkpoint's config.json ``hf``."""
    check_text_decoder(config, hf, where)
    check_vision_encoder(config, hf, where)


def _same(mine: Any, theirs: Any) -> bool:
    if isinstance(mine, (list, tuple)) or isinstance(theirs, (list, tuple)):
        return isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)) and list(mine) == list(theirs)
    return mine is not None and abs(float(mine) - float(theirs)) <= 1e-9 * max(abs(float(theirs)), 1.0)


def _compare(config: ModelConfig, field: str, mine: Any, where: str, key: str, theirs: Any) -> None:
    if not _same(mine, theirs):
        raise ModelConfigError(f"{config.source}: {field} is {mine}, but {where} has {key} = {theirs}; make "
                               "model.json match the checkpoint")


def load_pretrained(model: nn.Module, config: ModelConfig, path: str) -> None:
    """Load the HF checkpoint directory ``path`` (``config.json`` + safetensors, in any layout
    of the family) into ``model``, built from ``config``. Strict: every parameter must be
    found with its shape, and the text and vision numbers must equal the checkpoint's
    (``check_checkpoint_numbers``)."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: not an HF checkpoint directory (no config.json)")
    hf = load_config(path)
    check_checkpoint_numbers(config, hf, config_path)
    load_hf_weights(model, path, config.model_id, get_family(config.model_id).hf_layout(hf))


def check_checkpoint_config(config: ModelConfig, path: str, metadata: Mapping[str, Any]) -> Optional[str]:
    """``--load path`` of an MM checkpoint (``metadata``: its mp_rank_00 metadata.json) against
    this run's model.json, before the model is built: a training checkpoint's stored
    ``model_config`` must describe the same architecture (``check_same_architecture``); an
    ``mm-convert`` output's text numbers must equal its ``hf_config/config.json``
    (``check_checkpoint_numbers``). Returns a warning when neither can be checked (a checkpoint of an
    older msmm that stored no model config)."""
    directory = resolve_load_dir(path)
    if isinstance(metadata.get("model_config"), dict):
        check_same_architecture(metadata["model_config"], config, directory)
        return None
    config_dir = os.path.join(os.path.dirname(os.path.normpath(directory)), HF_CONFIG_DIR)
    if os.path.isfile(os.path.join(config_dir, "config.json")):
        check_checkpoint_numbers(config, load_config(config_dir), os.path.join(config_dir, "config.json"))
        return None
    return (f"--load {path}: {directory} records no model config (saved by an older msmm) and has no "
            f"{HF_CONFIG_DIR}/config.json: {config.source} is not checked against it")


def _tied_names(model: nn.Module) -> List[str]:
    """Parameters that share storage with another (a head tied to the embeddings): a
    checkpoint may omit them (HF saves tied weights once)."""
    return [f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            for name in getattr(module, "tied_weights", {})]


def _unused(model: nn.Module, spec: Optional[FamilySpec]) -> Optional[Pattern[str]]:
    unused = getattr(model_file(spec), "unused_checkpoint_keys", None) if spec is not None else None
    return unused(model.config) if unused is not None else None


def load_tensors(model: nn.Module, tensors: Mapping[str, Tensor], where: str, unused: Optional[Pattern[str]] = None,
                 require_all: bool = True, dtype: Optional[torch.dtype] = None) -> None:
    """Copy checkpoint tensors (full MM tensors) into ``model`` after
    ``msmm.checkpoint.load.match_state``; with tensor parallelism, this rank's pieces of them."""
    if tensor_parallel_size() > 1:  # the vision encoder's attention by whole heads (ViTSelfAttention)
        vision_heads = getattr(getattr(model.config, "vision", None), "num_attention_heads", None)
        tensors = shard_tensors(tensors, tensor_parallel_size(), tensor_parallel_rank(), vision_heads=vision_heads)
    expected = model.state_dict()
    chosen = match_state(tensors, {k: tuple(v.shape) for k, v in expected.items()}, where, _tied_names(model),
                         unused, require_all)
    model.load_state_dict({name: torch.tensor(t.numpy(), dtype=dtype or expected[name].dtype)
                           for name, t in chosen.items()}, strict=False)


def load_hf_weights(model: nn.Module, path: str, family: str, layout: Optional[str] = None,
                    dtype: Optional[torch.dtype] = None) -> None:
    """Load an HF safetensors checkpoint (a file, or a directory with one file or an index of
    shards) into ``model``, renamed by the family's table: a registry family (its ``layout``,
    default the one config.json shows) or a text decoder family (``qwen2``, ``llama``,
    ``internlm2``). Strict (``load_tensors``)."""
    if family in TEXT_NAMINGS:
        spec, naming, text_family = None, TEXT_NAMINGS[family], None
    elif family not in FAMILIES:
        raise ValueError(f"unknown checkpoint family {family!r}; known: {sorted(FAMILIES) + sorted(TEXT_NAMINGS)}")
    else:
        spec = get_family(family)
        naming, text_family = spec.naming, getattr(model.config, "text_family", None)
    if layout is None:
        has_config = os.path.isfile(os.path.join(path, "config.json"))
        layout = spec.hf_layout(load_config(path)) if spec is not None and has_config else "hf"
    tensors = naming.to_mm(read_hf_tensors(path), layout, text_family, strict=False)
    load_tensors(model, tensors, path, _unused(model, spec), dtype=dtype)


def load_mm_weights(model: nn.Module, path: str, family: str, require_all: bool = True) -> None:
    """Load an MM checkpoint (``mm-convert`` or ``msmm-train`` output, any TP/PP split) into a
    model of ``family``; without ``require_all`` it may hold a subset of the parameters."""
    load_tensors(model, read_mm(path)[0], path, _unused(model, get_family(family)), require_all)


def _config_dir(path: str) -> str:
    """Where the config.json of ``path`` is: itself (HF), or ``hf_config/`` of an MM checkpoint."""
    config_dir = os.path.join(path, HF_CONFIG_DIR) if is_mm_checkpoint(path) else path
    if not os.path.isfile(os.path.join(config_dir, "config.json")):
        raise FileNotFoundError(
            f"{path}: neither an HF checkpoint directory (config.json + safetensors) nor an MM checkpoint with "
            f"{HF_CONFIG_DIR}/config.json; build a model from model.json (build_model) and load_mm_weights it")
    return config_dir


def pretrained_family(path: str) -> FamilySpec:
    """The family of the checkpoint ``from_pretrained(path)`` would load."""
    config_dir = _config_dir(path)
    return family_of_hf_config(load_config(config_dir), os.path.join(config_dir, "config.json"))


def from_pretrained(path: str, image_token_id: Optional[int] = None, ckpt_path: Optional[str] = None) -> nn.Module:
    """The model of an HF checkpoint directory or of an MM checkpoint written by ``mm-convert
    hf_to_mm`` (its ``hf_config/config.json`` names the family), any family, with its weights.
    ``ckpt_path``: an MM checkpoint whose tensors then replace the loaded ones (a fine-tuned
    run). ``image_token_id``: the id of the image token where config.json has none (InternVL
    remote-code configs). The model is returned as built (training mode)."""
    config_dir = _config_dir(path)
    hf = load_config(config_dir)
    where = os.path.join(config_dir, "config.json")
    spec = family_of_hf_config(hf, where)
    model = model_file(spec).from_hf_config(hf, where, image_token_id)
    if config_dir == path:
        load_hf_weights(model, path, spec.name, spec.hf_layout(hf))
    else:
        load_mm_weights(model, path, spec.name)
    if ckpt_path:
        load_mm_weights(model, ckpt_path, spec.name, require_all=False)
    return model
