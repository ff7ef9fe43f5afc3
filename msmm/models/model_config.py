"""``model.json``: the model architecture in the MindSpeed-MM layout, parsed and validated.

    {
      "model_id": "qwen2_vl",
      "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
      "image_encoder": {
        "vision_encoder":   {"model_id": "qwen2_vit", "num_layers": 32, "hidden_size": 1280, ..., "freeze": true},
        "vision_projector": {"model_id": "patch_merger", "freeze": false}
      },
      "text_decoder": {"model_id": "qwen2", "num_layers": 28, "hidden_size": 3584, ..., "freeze": false}
    }

The top-level ``model_id`` names a family of ``msmm.registry`` (which sections and top-level
keys it has, and which section ``model_id``s fit it). Each section's keys are ``model_id``,
``freeze`` (default false), an optional ``lora`` block, ``pipeline_num_layers``, ``ckpt_path``
(the section's own weights), and the fields of the dataclass
registered for that ``model_id`` in ``COMPONENTS`` (e.g. ``TransformerConfig`` for decoders,
``QwenViTConfig`` for the Qwen ViT). Unknown keys, missing required keys and wrong types are
errors naming the file and the dotted key. Building the model from a ``ModelConfig`` is the
family's model file's ``from_model_json`` (``msmm.models.pretrained.build_model``).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import json
import logging
import typing
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from msmm.config.lora_config import LoRAConfig
from msmm.config.mindspeed_model import MindSpeedModelError, from_mindspeed, is_mindspeed_model_json
from msmm.config.unknown_keys import did_you_mean, unknown_key
from msmm.registry import FAMILIES, TEXT_DECODER, VISION_ENCODER, get_family

from .core import TransformerConfig
from .projectors import MLPProjectorConfig, PatchMergerConfig, PixelShuffleMLPConfig
from .vision.clip_vit import CLIPViTConfig
from .vision.qwen2_vit import QwenViTConfig
from .vision.vit import ViTConfig


logger = logging.getLogger("msmm.config")


class ModelConfigError(ValueError):
    pass


@dataclass
class Section:
    model_id: str
    freeze: bool
    config: Dict[str, Any]  # validated keyword arguments of the section's dataclass
    lora: Optional[LoRAConfig] = None  # the section's ``lora`` block (LoRA on its linear layers)
    # MindSpeed-MM's ``pipeline_num_layers`` (text_decoder, image_encoder.vision_encoder): layers per
    # pipeline stage, one inner tuple per virtual chunk ([6, 8, 8, 6] -> ((6, 8, 8, 6),)); checked
    # against the parallel sizes by msmm.train.parallel.validate
    pipeline_num_layers: Optional[Tuple[Tuple[int, ...], ...]] = None
    # MindSpeed-MM's ``ckpt_path``: this section's weights from its own checkpoint (an HF directory or
    # a weights file), loaded when the model is built (``msmm.models.section_weights``)
    ckpt_path: Optional[str] = None


# sections that take a ``lora`` block (XTuner's llm_lora and visual_encoder_lora)
LORA_SECTIONS = (TEXT_DECODER, VISION_ENCODER)
# sections that take MindSpeed-MM's ``pipeline_num_layers``
PIPELINE_SECTIONS = (TEXT_DECODER, VISION_ENCODER)


def parse_pipeline_num_layers(raw: Any, where: str) -> Tuple[Tuple[int, ...], ...]:
    """``[6, 8, 8, 6]`` (one count per pipeline stage) or ``[[2, 2], [2, 2]]`` (per virtual
    chunk, per stage) -> tuple of tuples; errors name ``where.pipeline_num_layers``."""
    where = f"{where}.pipeline_num_layers"
    nested = isinstance(raw, list) and bool(raw) and all(isinstance(c, list) for c in raw)
    chunks = raw if nested else [raw]
    if not (isinstance(raw, list) and raw and all(isinstance(c, list) and c for c in chunks)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for c in chunks for n in c)):
        raise ModelConfigError(f"{where}: expected a list of layer counts per pipeline stage (e.g. [6, 8, 8, 6]) or "
                               f"one such list per virtual pipeline chunk (e.g. [[2, 2], [2, 2]]), got {raw!r}")
    return tuple(tuple(c) for c in chunks)


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


# section path -> {section model_id: (dataclass, keys filled by the builder, not by model.json)}
COMPONENTS: Dict[str, Dict[str, Tuple[type, Tuple[str, ...]]]] = {
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
    if origin is dict:  # an object passed on as is; its dataclass checks its keys
        if not isinstance(value, dict):
            raise ModelConfigError(f"{where}: expected an object, got {value!r}")
        return dict(value)
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


def _parse_dataclass(cls: type, raw: Mapping[str, Any], where: str, skip: Tuple[str, ...],
                     allow_unknown: bool = False) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in raw:
        if key not in fields:
            unknown_key(f"{where}.{key}: unknown key{did_you_mean(key, fields)}", allow_unknown, ModelConfigError)
    out = {}
    for name, field in fields.items():
        if name in raw:
            out[name] = _check_type(raw[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ModelConfigError(f"{where}.{name}: required key is missing")
    return out


def _parse_section(path: str, raw: Any, source: str, allow_unknown: bool = False) -> Section:
    where = f"{source}: {path}"
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{where}: expected an object, got {raw!r}")
    body = dict(raw)
    model_id = body.pop("model_id", None)
    choices = COMPONENTS[path]
    if model_id not in choices:
        raise ModelConfigError(f"{where}.model_id: must be one of {sorted(choices)}, got {model_id!r}")
    freeze = _check_type(body.pop("freeze", False), bool, f"{where}.freeze")
    lora = None
    if "lora" in body:
        if path not in LORA_SECTIONS:
            raise ModelConfigError(f"{where}.lora: LoRA is configured on {' and '.join(LORA_SECTIONS)} only")
        raw_lora = body.pop("lora")
        lora = None if raw_lora is None else parse_lora_block(raw_lora, where)
    pipeline = None
    if "pipeline_num_layers" in body:
        if path not in PIPELINE_SECTIONS:
            raise ModelConfigError(f"{where}.pipeline_num_layers: only {' and '.join(PIPELINE_SECTIONS)} are split "
                                   "over pipeline stages")
        pipeline = parse_pipeline_num_layers(body.pop("pipeline_num_layers"), where)
    ckpt_path = body.pop("ckpt_path", None)
    if ckpt_path is not None and not (isinstance(ckpt_path, str) and ckpt_path):
        raise ModelConfigError(f"{where}.ckpt_path: expected a path (or null), got {ckpt_path!r}")
    cls, skip = choices[model_id]
    return Section(model_id, freeze, _parse_dataclass(cls, body, where, skip, allow_unknown), lora, pipeline,
                   ckpt_path)


def parse_model_config(data: Any, source: str = "model.json", allow_unknown_keys: bool = False) -> ModelConfig:
    """A validated ModelConfig of msmm's model.json, or of MindSpeed-MM's (rewritten by
    ``msmm.config.mindspeed_model``; the keys it accepts without effect are logged). An unknown
    key is an error, or with ``allow_unknown_keys`` a warning (``msmm-train --allow-unknown-keys``)."""
    if is_mindspeed_model_json(data):
        try:
            data, notes = from_mindspeed(data, source, allow_unknown_keys)
        except MindSpeedModelError as err:
            raise ModelConfigError(str(err)) from err
        for note in notes:
            logger.info(note)
    if not isinstance(data, dict):
        raise ModelConfigError(f"{source}: expected a JSON object at the top level")
    model_id = data.get("model_id")
    try:
        spec = get_family(model_id, source) if isinstance(model_id, str) else None
    except ValueError:
        spec = None
    if spec is None:
        raise ModelConfigError(f"{source}: model_id must be one of {sorted(FAMILIES)}, got {model_id!r}")
    section_paths, scalars = tuple(spec.section_models), spec.scalars
    groups = {path.split(".")[0] for path in section_paths}
    for key in data:
        if key != "model_id" and key not in groups and key not in scalars:
            unknown_key(f"{source}: {key}: unknown key for model_id {model_id!r}"
                        f"{did_you_mean(key, list(groups) + list(scalars))}", allow_unknown_keys, ModelConfigError)
    sections = {}
    for path in section_paths:
        node: Any = data
        for i, part in enumerate(path.split(".")):
            if not isinstance(node, dict) or part not in node:
                raise ModelConfigError(f"{source}: {'.'.join(path.split('.')[: i + 1])}: required key is missing")
            node = node[part]
        fits = spec.section_models[path]
        component = node.get("model_id") if isinstance(node, dict) else None
        if component in COMPONENTS[path] and component not in fits:
            raise ModelConfigError(f"{source}: {path}.model_id: {component!r} does not fit model_id "
                                   f"{model_id!r}; expected one of {list(fits)}")
        sections[path] = _parse_section(path, node, source, allow_unknown_keys)
    for group in groups:
        children = {p.split(".", 1)[1] for p in section_paths if p.startswith(group + ".")}
        if children:
            for key in data[group]:
                if key not in children:
                    unknown_key(f"{source}: {group}.{key}: unknown key (expected {sorted(children)})",
                                allow_unknown_keys, ModelConfigError)
    options = {}
    for key, hint in scalars.items():
        if key not in data:
            raise ModelConfigError(f"{source}: {key}: required key is missing")
        options[key] = _check_type(data[key], hint, f"{source}: {key}")
    return ModelConfig(spec.name, sections, options, source)


def load_model_config(path: str, allow_unknown_keys: bool = False) -> ModelConfig:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    return parse_model_config(data, path, allow_unknown_keys)


def construct(cls: type, section: Section, where: str, **extra: Any) -> Any:
    """The section's dataclass; its own checks (``__post_init__``) reported under the section."""
    try:
        return cls(**section.config, **extra)
    except ValueError as err:
        raise ModelConfigError(f"{where}: {err}") from err


def text_config(config: ModelConfig) -> TransformerConfig:
    """The ``text_decoder`` section's TransformerConfig; M-RoPE only for the families that use it."""
    text = construct(TransformerConfig, config.sections[TEXT_DECODER], f"{config.source}: {TEXT_DECODER}")
    if text.mrope_section is not None and not get_family(config.model_id).mrope:
        users = " / ".join(spec.title for spec in FAMILIES.values() if spec.mrope)
        raise ModelConfigError(f"{config.source}: text_decoder.mrope_section: only {users} use M-RoPE")
    return text


# ---- the model.json a checkpoint was saved with ----------------------------------------------

# keys that may differ between the model.json a checkpoint was saved with and the one a run
# resumes it with, and why: they do not change what the trained model computes
NOT_ARCHITECTURE = {
    "freeze": "which parameters train, not what the model computes",
    "init_method_std": "initialization only; the weights come from the checkpoint",
    "attention_dropout": "regularization while training",
    "hidden_dropout": "regularization while training",
    "lora_dropout": "regularization while training",
    "tensor_model_parallel_size": "how the same model is split across devices",
}


def model_config_record(config: ModelConfig) -> Dict[str, Any]:
    """The parsed model.json as JSON (stored in every checkpoint's metadata.json as
    ``model_config``): model.json's nesting, each section with its ``model_id``, ``freeze``,
    ``lora`` block (or null) and every field of its dataclass, defaults filled in, so two
    records compare field by field whatever each model.json left out."""
    out: Dict[str, Any] = {"model_id": config.model_id, **config.options}
    for path, section in config.sections.items():
        cls, skip = COMPONENTS[path][section.model_id]
        values: Dict[str, Any] = {"model_id": section.model_id, "freeze": section.freeze,
                                  "lora": dataclasses.asdict(section.lora) if section.lora is not None else None}
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            if f.name in section.config:
                values[f.name] = section.config[f.name]
            elif f.default is not dataclasses.MISSING:
                values[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
        node = out
        for part in path.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[path.split(".")[-1]] = values
    return json.loads(json.dumps(out))


def _flat(record: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and key != "lora":
            out.update(_flat(value, f"{prefix}{key}."))
        elif key == "lora" and isinstance(value, dict):
            out[f"{prefix}lora"] = True  # a block is there; its keys follow
            out.update(_flat(value, f"{prefix}lora."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_architecture(saved: Mapping[str, Any], config: ModelConfig, where: str) -> None:
    """Resuming: ``config`` (this run's model.json) must describe the model the checkpoint
    ``where`` was saved with (``saved``, its ``model_config_record``). Every key must be equal
    except those of ``NOT_ARCHITECTURE``; a ``lora`` block may be added to a section that had
    none (LoRA started on a checkpoint trained without it); keys only one side's schema has
    (a newer or older msmm) are not compared. The error names each differing key and both
    values."""
    ours, theirs = _flat(model_config_record(config)), _flat(saved)
    differing = []
    for key in ours:
        if key not in theirs or key.rsplit(".", 1)[-1] in NOT_ARCHITECTURE:
            continue
        if key.endswith(".lora"):  # True: a block (its keys compared below), None: none
            if ours[key] is None and theirs[key] is not None:
                differing.append(f"{key}: the checkpoint was trained with a LoRA block, this model.json has none")
            continue  # equal, or LoRA added on resume
        if ours[key] != theirs[key]:
            differing.append(f"{key} is {ours[key]!r} here, {theirs[key]!r} in the checkpoint")
    if differing:
        raise ModelConfigError(
            f"{config.source}: does not describe the model {where} was saved with (its metadata.json "
            f"model_config): {'; '.join(differing)}. Only {', '.join(sorted(NOT_ARCHITECTURE))} may differ on "
            "resume (and a lora block be added)")
