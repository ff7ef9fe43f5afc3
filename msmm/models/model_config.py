"""``model.json``: the model architecture in the MindSpeed-MM layout, validated.

    {
      "model_id": "qwen2_vl",
      "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
      "image_encoder": {
        "vision_encoder":   {"model_id": "qwen2_vit", "num_layers": 32, "hidden_size": 1280, ..., "freeze": true},
        "vision_projector": {"model_id": "patch_merger", "freeze": false}
      },
      "text_decoder": {"model_id": "qwen2", "num_layers": 28, "hidden_size": 3584, ..., "freeze": false}
    }

Each section's keys are ``model_id``, ``freeze`` (default false) and the fields of the
dataclass registered for that ``model_id`` in ``SECTIONS`` (e.g. ``TransformerConfig`` for
decoders, ``QwenViTConfig`` for the Qwen ViT). Unknown keys, missing required keys and
wrong types are errors naming the file and the dotted key. ``MODELS`` maps the top-level
``model_id`` to its allowed top-level keys and a builder; ``build_model`` builds the
module and freezes the sections marked ``freeze``.

Registered: ``qwen2_vl`` / ``qwen2_5_vl`` (``qwen2_vit`` / ``qwen2_5_vit`` + ``patch_merger``,
``qwen2`` text), ``internvl`` (``intern_vit`` + ``pixel_shuffle_mlp``; ``qwen2``, ``internlm2``
or ``llama`` text) and ``llava`` (``clip_vit`` + ``mlp``; ``llama`` or ``qwen2`` text); InternVL
and LLaVA take one top-level scalar, ``image_token_id`` (``<IMG_CONTEXT>`` / ``<image>``).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch.nn as nn

from .checkpoint_io import load_hf_checkpoint
from .core import TransformerConfig
from .internvl import InternVL, InternVLConfig, load_internvl_checkpoint
from .llava import Llava, LlavaConfig, load_llava_checkpoint
from .lora import apply_lora
from msmm.config.lora_config import LoRAConfig
from .qwen2_vl import Qwen2VL, Qwen2VLConfig
from .vision.qwen2_vit import QwenViTConfig
from .vision.vit import ViTConfig


class ModelConfigError(ValueError):
    pass


@dataclass
class PatchMergerConfig:
    """The Qwen 2x2 patch merger; its output width is the text decoder's hidden_size."""


@dataclass
class CLIPViTConfig(ViTConfig):
    """The LLaVA-1.5 CLIP tower: ``ViTConfig`` with CLIP's defaults (LayerNorm eps 1e-5,
    quick-GELU, penultimate layer) and which tokens reach the projector: ``"default"``
    drops the class token, ``"full"`` keeps it."""

    layernorm_epsilon: float = 1e-5
    activation: str = "quick_gelu"
    feature_layer: int = -2
    select_strategy: str = "default"


@dataclass
class PixelShuffleMLPConfig:
    """InternVL's projector: pixel shuffle by ``downsample_ratio``, then LayerNorm-Linear-GELU-Linear."""

    downsample_ratio: float = 0.5
    ps_version: str = "v2"  # "v1" (InternVL 1.x remote code) or "v2"


@dataclass
class MLPProjectorConfig:
    """LLaVA-1.5's projector: Linear-GELU-Linear."""

    bias: bool = True


@dataclass
class Section:
    model_id: str
    freeze: bool
    config: Dict[str, Any]  # validated keyword arguments of the section's dataclass
    lora: Optional[LoRAConfig] = None  # the section's ``lora`` block (LoRA on its linear layers)


# sections that take a ``lora`` block (XTuner's llm_lora and visual_encoder_lora)
LORA_SECTIONS = ("text_decoder", "image_encoder.vision_encoder")
_LORA_KEYS = {f.name for f in dataclasses.fields(LoRAConfig)}


def parse_lora_block(raw: Any, where: str) -> LoRAConfig:
    """A ``lora`` block ({"r": 128, "lora_alpha": 256, "lora_dropout": 0.05, "target_modules": [...]});
    errors name ``where.lora.<key>``."""
    where = f"{where}.lora"
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{where}: expected an object, got {raw!r}")
    for key in raw:
        if key not in _LORA_KEYS:
            close = difflib.get_close_matches(key, sorted(_LORA_KEYS), n=1)
            raise ModelConfigError(f"{where}.{key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
    try:
        return LoRAConfig(**raw)
    except ValueError as err:
        raise ModelConfigError(f"{where}.{err}") from err


@dataclass
class ModelConfig:
    model_id: str
    sections: Dict[str, Section]  # dotted path ("image_encoder.vision_encoder") -> section
    options: Dict[str, Any]  # validated top-level scalars (token ids, ...)
    source: str = "model.json"


# section path -> {model_id: (dataclass, keys filled by the builder, not by model.json)}
SECTIONS: Dict[str, Dict[str, Tuple[type, Tuple[str, ...]]]] = {
    "text_decoder": {
        "qwen2": (TransformerConfig, ()),
        "llama": (TransformerConfig, ()),
        "internlm2": (TransformerConfig, ()),
    },
    "image_encoder.vision_encoder": {
        "qwen2_vit": (QwenViTConfig, ("out_hidden_size",)),
        "qwen2_5_vit": (QwenViTConfig, ("out_hidden_size",)),
        "intern_vit": (ViTConfig, ()),
        "clip_vit": (CLIPViTConfig, ()),
    },
    "image_encoder.vision_projector": {
        "patch_merger": (PatchMergerConfig, ()),
        "pixel_shuffle_mlp": (PixelShuffleMLPConfig, ()),
        "mlp": (MLPProjectorConfig, ()),
    },
}


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        return _check_type(value, next(a for a in args if a is not type(None)), where)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list):
            raise ModelConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{where}: unsupported field type {hint!r}")
    if not ok:
        raise ModelConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _parse_dataclass(cls: type, raw: Mapping[str, Any], where: str, skip: Tuple[str, ...]) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ModelConfigError(f"{where}.{key}: unknown key{hint}")
    out = {}
    for name, field in fields.items():
        if name in raw:
            out[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ModelConfigError(f"{where}.{name}: required key is missing")
    return out


def _parse_section(path: str, raw: Any, source: str) -> Section:
    where = f"{source}: {path}"
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{where}: expected an object, got {raw!r}")
    body = dict(raw)
    model_id = body.pop("model_id", None)
    choices = SECTIONS[path]
    if model_id not in choices:
        raise ModelConfigError(f"{where}.model_id: must be one of {sorted(choices)}, got {model_id!r}")
    freeze = _check_type(body.pop("freeze", False), bool, f"{where}.freeze")
    lora = None
    if "lora" in body:
        if path not in LORA_SECTIONS:
            raise ModelConfigError(f"{where}.lora: LoRA is configured on {' and '.join(LORA_SECTIONS)} only")
        raw_lora = body.pop("lora")
        lora = None if raw_lora is None else parse_lora_block(raw_lora, where)
    cls, skip = choices[model_id]
    return Section(model_id, freeze, _parse_dataclass(cls, body, where, skip), lora)


# top-level model_id -> (required sections, top-level scalar keys with types, builder)
Builder = Callable[[ModelConfig], nn.Module]
MODELS: Dict[str, Tuple[Tuple[str, ...], Dict[str, type], Builder]] = {}


def parse_model_config(data: Any, source: str = "model.json") -> ModelConfig:
    if not isinstance(data, dict):
        raise ModelConfigError(f"{source}: expected a JSON object at the top level")
    model_id = data.get("model_id")
    if model_id not in MODELS:
        raise ModelConfigError(f"{source}: model_id must be one of {sorted(MODELS)}, got {model_id!r}")
    section_paths, scalars, _ = MODELS[model_id]
    groups = {path.split(".")[0] for path in section_paths}
    for key in data:
        if key != "model_id" and key not in groups and key not in scalars:
            close = difflib.get_close_matches(key, list(groups) + list(scalars), n=1)
            raise ModelConfigError(
                f"{source}: {key}: unknown key for model_id {model_id!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    sections = {}
    for path in section_paths:
        node: Any = data
        for i, part in enumerate(path.split(".")):
            if not isinstance(node, dict) or part not in node:
                raise ModelConfigError(f"{source}: {'.'.join(path.split('.')[: i + 1])}: required key is missing")
            node = node[part]
        sections[path] = _parse_section(path, node, source)
    for group in groups:
        children = {p.split(".", 1)[1] for p in section_paths if p.startswith(group + ".")}
        if children:
            for key in data[group]:
                if key not in children:
                    raise ModelConfigError(f"{source}: {group}.{key}: unknown key (expected {sorted(children)})")
    options = {}
    for key, hint in scalars.items():
        if key not in data:
            raise ModelConfigError(f"{source}: {key}: required key is missing")
        options[key] = _check_type(data[key], hint, f"{source}: {key}")
    return ModelConfig(model_id, sections, options, source)


def load_model_config(path: str) -> ModelConfig:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    return parse_model_config(data, source=path)


def build_model(config: ModelConfig) -> nn.Module:
    """Build the model of ``config`` and set requires_grad=False on frozen sections."""
    model = MODELS[config.model_id][2](config)
    for path, section in config.sections.items():
        if section.freeze:
            for module in FREEZE_TARGETS[config.model_id][path](model):
                for p in module.parameters():
                    p.requires_grad = False
    return model


def apply_lora_config(model: nn.Module, config: ModelConfig) -> Dict[str, list]:
    """Put LoRA layers on every section with a ``lora`` block (after pretrained weights are
    loaded: a quantized base is quantized from them). The section's base weights are frozen
    whatever its ``freeze``; its adapters (and ``modules_to_save``) train. Returns
    {section path: adapted module names}."""
    adapted = {}
    for path, section in config.sections.items():
        if section.lora is not None:
            roots = FREEZE_TARGETS[config.model_id][path](model)
            try:
                adapted[path] = apply_lora(model, roots, section.lora, where=f"{path}.lora")
            except ValueError as err:
                raise ModelConfigError(f"{config.source}: {err}") from err
    return adapted


def _require_model_ids(config: ModelConfig, allowed: Mapping[str, Tuple[str, ...]]) -> None:
    """Each section's ``model_id`` must be one that fits the top-level model."""
    for path, ids in allowed.items():
        got = config.sections[path].model_id
        if got not in ids:
            raise ModelConfigError(f"{config.source}: {path}.model_id: {got!r} does not fit model_id "
                                   f"{config.model_id!r}; expected one of {list(ids)}")


def _construct(cls: type, section: Section, where: str) -> Any:
    """The section's dataclass; its own checks (``__post_init__``) reported under the section."""
    try:
        return cls(**section.config)
    except ValueError as err:
        raise ModelConfigError(f"{where}: {err}") from err


def _text_config(config: ModelConfig) -> TransformerConfig:
    text = _construct(TransformerConfig, config.sections["text_decoder"], f"{config.source}: text_decoder")
    if text.mrope_section is not None and config.model_id not in ("qwen2_vl", "qwen2_5_vl"):
        raise ModelConfigError(f"{config.source}: text_decoder.mrope_section: only Qwen2-VL / Qwen2.5-VL use M-RoPE")
    return text


# ---- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------------------

def _build_qwen2_vl(config: ModelConfig) -> Qwen2VL:
    _require_model_ids(config, {"image_encoder.vision_encoder": ("qwen2_vit", "qwen2_5_vit"),
                                "image_encoder.vision_projector": ("patch_merger",), "text_decoder": ("qwen2",)})
    text = TransformerConfig(**config.sections["text_decoder"].config)
    encoder = config.sections["image_encoder.vision_encoder"]
    vision = QwenViTConfig(**encoder.config, out_hidden_size=text.hidden_size)
    where = f"{config.source}: image_encoder.vision_encoder"
    if encoder.model_id == "qwen2_5_vit" and vision.window_size is None:
        raise ModelConfigError(f"{where}.window_size: required for model_id 'qwen2_5_vit'")
    if encoder.model_id == "qwen2_vit" and vision.window_size is not None:
        raise ModelConfigError(f"{where}.window_size: only 'qwen2_5_vit' has window attention")
    if text.mrope_section is None:
        raise ModelConfigError(f"{config.source}: text_decoder.mrope_section: required for {config.model_id}")
    return Qwen2VL(Qwen2VLConfig(vision=vision, text=text, **config.options))


_QWEN2_VL_SECTIONS = ("image_encoder.vision_encoder", "image_encoder.vision_projector", "text_decoder")
_QWEN2_VL_SCALARS = {"image_token_id": int, "video_token_id": int, "vision_start_token_id": int}
MODELS["qwen2_vl"] = (_QWEN2_VL_SECTIONS, _QWEN2_VL_SCALARS, _build_qwen2_vl)
MODELS["qwen2_5_vl"] = (_QWEN2_VL_SECTIONS, _QWEN2_VL_SCALARS, _build_qwen2_vl)

# model_id -> section path -> the modules that section's ``freeze`` covers
_QWEN2_VL_FREEZE = {
    "image_encoder.vision_encoder": lambda m: [m.visual.patch_embed, m.visual.blocks],
    "image_encoder.vision_projector": lambda m: [m.visual.merger],
    "text_decoder": lambda m: [m.model, m.lm_head],
}
FREEZE_TARGETS: Dict[str, Dict[str, Callable[[nn.Module], list]]] = {
    "qwen2_vl": _QWEN2_VL_FREEZE,
    "qwen2_5_vl": _QWEN2_VL_FREEZE,
}


# ---- InternVL (HF-native layout; Qwen2, InternLM2 or Llama text) -----------------------------

def _build_internvl(config: ModelConfig) -> InternVL:
    _require_model_ids(config, {"image_encoder.vision_encoder": ("intern_vit",),
                                "image_encoder.vision_projector": ("pixel_shuffle_mlp",),
                                "text_decoder": ("qwen2", "internlm2", "llama")})
    where = f"{config.source}: image_encoder"
    vision = _construct(ViTConfig, config.sections["image_encoder.vision_encoder"], f"{where}.vision_encoder")
    projector = config.sections["image_encoder.vision_projector"]
    shuffle = _construct(PixelShuffleMLPConfig, projector, f"{where}.vision_projector")
    if shuffle.ps_version not in ("v1", "v2"):
        raise ModelConfigError(f"{where}.vision_projector.ps_version: must be 'v1' or 'v2', got {shuffle.ps_version!r}")
    if (vision.grid_size * shuffle.downsample_ratio) % 1:
        raise ModelConfigError(f"{where}.vision_projector.downsample_ratio: {shuffle.downsample_ratio} does not divide "
                               f"the {vision.grid_size}x{vision.grid_size} patch grid evenly")
    return InternVL(InternVLConfig(vision=vision, text=_text_config(config),
                                   text_family=config.sections["text_decoder"].model_id,
                                   downsample_ratio=shuffle.downsample_ratio, ps_version=shuffle.ps_version,
                                   **config.options))


# ---- LLaVA-1.5 -------------------------------------------------------------------------------

def _build_llava(config: ModelConfig) -> Llava:
    _require_model_ids(config, {"image_encoder.vision_encoder": ("clip_vit",),
                                "image_encoder.vision_projector": ("mlp",),
                                "text_decoder": ("llama", "qwen2")})
    where = f"{config.source}: image_encoder"
    encoder = _construct(CLIPViTConfig, config.sections["image_encoder.vision_encoder"], f"{where}.vision_encoder")
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    vision = ViTConfig(**{k: v for k, v in dataclasses.asdict(encoder).items() if k in fields})
    projector = _construct(MLPProjectorConfig, config.sections["image_encoder.vision_projector"], f"{where}.vision_projector")
    try:
        llava = LlavaConfig(vision=vision, text=_text_config(config), text_family=config.sections["text_decoder"].model_id,
                            select_strategy=encoder.select_strategy, projector_bias=projector.bias, **config.options)
    except ValueError as err:
        raise ModelConfigError(f"{where}.vision_encoder.select_strategy: {err}") from err
    return Llava(llava)


_VLM_SECTIONS = ("image_encoder.vision_encoder", "image_encoder.vision_projector", "text_decoder")
MODELS["internvl"] = (_VLM_SECTIONS, {"image_token_id": int}, _build_internvl)  # id of <IMG_CONTEXT>
MODELS["llava"] = (_VLM_SECTIONS, {"image_token_id": int}, _build_llava)  # id of <image>

_VLM_FREEZE = {
    "image_encoder.vision_encoder": lambda m: [m.vision_tower],
    "image_encoder.vision_projector": lambda m: [m.multi_modal_projector],
    "text_decoder": lambda m: [m.language_model],
}
FREEZE_TARGETS["internvl"] = _VLM_FREEZE
FREEZE_TARGETS["llava"] = _VLM_FREEZE


# ---- pretrained weights (``--load`` of an HF checkpoint directory) -------------------------

def _load_internvl(model: InternVL, path: str) -> None:
    with open(os.path.join(path, "config.json")) as f:
        layout = "remote" if "llm_config" in json.load(f) else "hf"  # remote code vs HF-native
    load_internvl_checkpoint(model, path, layout)


PRETRAINED_LOADERS: Dict[str, Callable[[nn.Module, str], None]] = {
    "qwen2_vl": lambda model, path: load_hf_checkpoint(model, path, "qwen2_vl"),
    "qwen2_5_vl": lambda model, path: load_hf_checkpoint(model, path, "qwen2_vl"),
    "internvl": _load_internvl,
    "llava": load_llava_checkpoint,
}


# text_decoder field -> the HF text config key holding the same number
_TEXT_KEYS = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size", "num_attention_heads": "num_attention_heads",
              "num_query_groups": "num_key_value_heads", "ffn_hidden_size": "intermediate_size",
              "vocab_size": "vocab_size", "layernorm_epsilon": "rms_norm_eps", "rotary_base": "rope_theta"}


def check_text_decoder(config: ModelConfig, hf: Mapping[str, Any], where: str) -> None:
    """The text numbers that loading cannot catch (a wrong RoPE base or norm epsilon loads
    fine) must equal the checkpoint's: each ``text_decoder`` field against the key of the
    ``text_config`` (HF-native), ``llm_config`` (InternVL remote code) or, without either, the
    top level (Qwen2-VL / Qwen2.5-VL ``config.json``) that ``config.json`` has. Keys the
    checkpoint leaves to its defaults are not checked."""
    section = next((key for key in ("text_config", "llm_config") if isinstance(hf.get(key), dict)), None)
    text = hf if section is None else hf[section]
    if "text_decoder" not in config.sections:
        return
    ours = TransformerConfig(**config.sections["text_decoder"].config)
    for field, key in _TEXT_KEYS.items():
        if text.get(key) is None:
            continue
        mine, theirs = getattr(ours, field), text[key]
        if abs(float(mine) - float(theirs)) > 1e-9 * max(abs(float(theirs)), 1.0):
            raise ModelConfigError(f"{config.source}: text_decoder.{field} is {mine}, but {where} has "
                                   f"{key if section is None else f'{section}.{key}'} = {theirs}; make model.json match the checkpoint")


def load_pretrained(model: nn.Module, config: ModelConfig, path: str) -> None:
    """Load the HF checkpoint directory ``path`` (``config.json`` + safetensors; InternVL in
    its HF-native or remote-code layout) into ``model``, built from ``config``. Strict: every
    parameter must be found with its shape, and the text decoder's numbers must equal the
    checkpoint's (``check_text_decoder``)."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: not an HF checkpoint directory (no config.json)")
    with open(config_path) as f:
        check_text_decoder(config, json.load(f), config_path)
    PRETRAINED_LOADERS[config.model_id](model, path)
