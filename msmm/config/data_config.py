"""``data.json``: the MindSpeed-MM data configuration, validated with errors that name the key.

Shape (a key that is not listed here is an error naming the file, the dotted key and the
closest known key, unless ``allow_unknown_keys`` (``msmm-train --allow-unknown-keys``) turns
these errors into warnings; keys of MindSpeed-MM's published data.json files that msmm does not
use, in :data:`UPSTREAM_UNUSED_KEYS`, are logged at info level and ignored)::

    {"dataset_param": {
        "dataset_type": "multimodal" | "huggingface",
        "basic_parameters": {"template_name" | "template", "data_path", "data_folder",
                             "dataset_dir", "dataset", "cutoff_len", "max_samples", "strict",
                             "val_dataset", "val_max_samples", "val_rate"},
        "preprocess_parameters": {"model_name_or_path", "image_min_pixels", "image_max_pixels",
                                  "video_min_pixels", "video_max_pixels", "video_fps",
                                  "video_maxlen", "pad_to_square"},
        "tokenizer_config": {"from_pretrained", "model_max_length", "use_fast", ...},
        "attr": {"messages", "images", "videos", "role_tag", "content_tag", ...},
        "image_size", "patch_size", "downsample_ratio", "dynamic_image_size", "use_thumbnail",
        "min_dynamic_patch", "max_dynamic_patch", "min_num_frame", "max_num_frame",
        "sampling_method"},
     "dataloader_param": {"shuffle", "drop_last", "num_workers", "seed", "group_by_length",
                          "packing", "collate_param": {"model_name", "pad_id"}}}
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from msmm.registry import data_families

logger = logging.getLogger("msmm.config")

TEMPLATES = ("internvl2_5", "internlm2-chat", "qwen2vl", "llava-v1", "plain")
MODEL_FAMILIES = data_families()  # data.json model_name values: the registry's data families
_FAMILY_OF_TEMPLATE = {
    "internvl2_5": "internvl",
    "internlm2-chat": "internvl",
    "qwen2vl": "qwen2vl",
    "llava-v1": "llava",
    "plain": "llava",
}


class DataConfigError(ValueError):
    """A ``data.json`` problem; the message starts with the file and the dotted key."""


# Keys of MindSpeed-MM's (and LLaMA-Factory's) data.json files that msmm reads nothing from,
# per section (the dataclass a section is read into): accepted and logged, never an error,
# so the published files load unchanged. Anything else unknown is most likely a typo.
UPSTREAM_UNUSED_KEYS: dict[str, frozenset[str]] = {
    "DataConfig": frozenset(),
    "DatasetParam": frozenset({"use_text_processer", "is_multimodal", "mm_use_im_start_end", "image_aspect_ratio"}),
    "BasicParameters": frozenset({"cache_dir", "train_on_prompt", "mask_history", "preprocessing_batch_size",
                                  "preprocessing_num_workers", "tool_format", "overwrite_cache", "val_size",
                                  "streaming", "buffer_size", "mix_strategy", "interleave_probs",
                                  "ignore_pad_token_for_loss", "image_dir", "dataset_type"}),
    "PreprocessParameters": frozenset({"image_reader_type", "train_pipeline", "use_fast_tokenizer",
                                       "split_special_tokens", "image_resolution", "video_resolution",
                                       "image_processer_type", "image_processer_path", "model_revision",
                                       "new_special_tokens", "resize_vocab", "hf_hub_token", "cache_dir"}),
    "TokenizerConfig": frozenset({"hub_backend", "autotokenizer_name", "padding_side", "local_files_only"}),
    "Attributes": frozenset({"system", "observation_tag", "function_tag", "tools", "prompt", "query", "response",
                             "history", "chosen", "rejected", "kto_tag", "audios"}),
    "DataloaderParam": frozenset({"dataloader_mode", "pin_memory", "sampler_type", "prefetch_factor",
                                  "persistent_workers", "consumed_samples"}),
    "CollateParam": frozenset({"ignore_pad_token_for_loss"}),
}
# MindSpeed-MM keys that msmm reads from another place: ignored where they are, with a warning
# naming where msmm reads them.
UPSTREAM_MOVED_KEYS: dict[tuple[str, str], str] = {
    ("DatasetParam", "template_name"): "dataset_param.basic_parameters.template_name",
    ("DatasetParam", "group_by_length"): "dataloader_param.group_by_length",
    ("DatasetParam", "down_sample_ratio"): "dataset_param.downsample_ratio",
}


@dataclass
class BasicParameters:
    template_name: Optional[str] = None  # MindSpeed-MM InternVL/LLaVA spelling
    template: Optional[str] = None  # MindSpeed-MM Qwen2-VL (LLaMA-Factory) spelling
    data_path: Optional[str] = None  # annotation file (InternVL / LLaVA)
    data_folder: str = ""  # media root for data_path
    dataset_dir: str = ""  # media root for dataset (Qwen2-VL)
    dataset: Optional[str] = None  # annotation file (mllm format)
    cutoff_len: Optional[int] = None  # longest sample in tokens; longer ones are bad input
    max_samples: Optional[int] = None
    repeat_time: int = 1
    strict: bool = False  # stop at the first bad input instead of skipping it
    # validation data (MindSpeed-MM): an annotation file of the same layout, or a share of the records
    val_dataset: Optional[str] = None
    val_max_samples: Optional[int] = None  # the first N records of val_dataset
    val_rate: Optional[float] = None
    # MindSpeed-MM (LLaMA-Factory): with attr.packing, pack without attention across the samples
    neat_packing: bool = False

    @property
    def annotation_path(self) -> str:
        return self.data_path or self.dataset  # validated: one of them is set

    @property
    def media_root(self) -> str:
        return self.data_folder if self.data_path else self.dataset_dir


@dataclass
class PreprocessParameters:
    model_name_or_path: Optional[str] = None
    image_min_pixels: int = 56 * 56
    image_max_pixels: int = 28 * 28 * 1280
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    video_fps: float = 2.0
    video_maxlen: int = 768  # most frames sampled from one video
    video_minlen: int = 4
    pad_to_square: bool = False  # LLaVA-1.5 "image_aspect_ratio": "pad"


@dataclass
class TokenizerConfig:
    from_pretrained: Optional[str] = None
    model_max_length: Optional[int] = None
    use_fast: bool = True
    trust_remote_code: bool = False
    add_eos_token: bool = False


@dataclass(frozen=True)
class Attributes:
    """Key names of the ``messages`` schema (the ``attr`` section of a Qwen2-VL ``data.json``);
    ``images`` / ``videos`` null: the records have no such column (MindSpeed-MM's image-only
    data.json files write ``"videos": null``)."""

    messages: str = "messages"
    images: Optional[str] = "images"
    videos: Optional[str] = "videos"
    role_tag: str = "role"
    content_tag: str = "content"
    user_tag: str = "user"
    assistant_tag: str = "assistant"
    system_tag: str = "system"
    packing: bool = False  # MindSpeed-MM's switch of packing (with basic_parameters.neat_packing)


@dataclass
class DatasetParam:
    basic_parameters: BasicParameters
    dataset_type: str = "multimodal"
    preprocess_parameters: PreprocessParameters = field(default_factory=PreprocessParameters)
    tokenizer_config: TokenizerConfig = field(default_factory=TokenizerConfig)
    attr: Attributes = field(default_factory=Attributes)
    # InternVL image and video parameters
    image_size: int = 448
    patch_size: int = 14
    downsample_ratio: float = 0.5
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    min_num_frame: int = 4
    max_num_frame: int = 24
    sampling_method: str = "rand"  # "rand" | "middle" | "fpsX.Y"
    # LLaVA (CLIP) image size
    crop_size: int = 336


@dataclass
class CollateParam:
    model_name: Optional[str] = None  # "internvl" | "qwen2vl" | "llava"
    pad_id: Optional[int] = None  # default: the tokenizer's pad token


@dataclass
class DataloaderParam:
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 0
    seed: int = 1234
    micro_batch_size: int = 1
    group_by_length: bool = False
    packing: bool = False
    collate_param: CollateParam = field(default_factory=CollateParam)


@dataclass
class DataConfig:
    dataset_param: DatasetParam
    dataloader_param: DataloaderParam = field(default_factory=DataloaderParam)
    source: str = "data.json"

    @property
    def template(self) -> str:
        basic = self.dataset_param.basic_parameters
        return basic.template_name or basic.template  # validated: one is set

    @property
    def model_family(self) -> str:
        return self.dataloader_param.collate_param.model_name or _FAMILY_OF_TEMPLATE[self.template]

    @property
    def tokenizer_path(self) -> Optional[str]:
        param = self.dataset_param
        return param.tokenizer_config.from_pretrained or param.preprocess_parameters.model_name_or_path


def load_data_config(path: str, allow_unknown_keys: bool = False) -> DataConfig:
    """Read and validate a ``data.json`` file (``allow_unknown_keys``: unknown keys warn instead of failing)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DataConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataConfigError(f"{path}:{e.lineno}: malformed json: {e.msg} at column {e.colno}") from None
    return parse_data_config(raw, source=path, allow_unknown_keys=allow_unknown_keys)


def parse_data_config(raw: Any, source: str = "data.json", allow_unknown_keys: bool = False) -> DataConfig:
    """Validate a ``data.json`` mapping; every error names ``source`` and the dotted key."""
    if isinstance(raw, dict) and "source" in raw:
        raise DataConfigError(f"{source}: source: unknown key")
    raw = {**raw, "source": source} if isinstance(raw, dict) else raw
    config = _build(DataConfig, raw, "", source, allow_unknown_keys)
    _check(config, source)
    return config


def _build(cls: type, raw: Any, path: str, source: str, allow_unknown: bool = False) -> Any:
    where = path or "<top level>"
    if not isinstance(raw, dict):
        raise DataConfigError(f"{source}: {where}: expected an object, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key in fields:
            continue
        moved = UPSTREAM_MOVED_KEYS.get((cls.__name__, key))
        if moved is not None:
            logger.warning("%s: %s: a MindSpeed-MM key msmm reads as %s; ignored here", source, _join(path, key), moved)
            continue
        if key in UPSTREAM_UNUSED_KEYS.get(cls.__name__, ()):
            logger.info("%s: %s: a MindSpeed-MM key msmm does not use, ignored", source, _join(path, key))
            continue
        close = difflib.get_close_matches(key, [f for f in fields if f != "source"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if not allow_unknown:
            raise DataConfigError(f"{source}: {_join(path, key)}: unknown key{hint}; "
                                  "msmm-train --allow-unknown-keys turns this error into a warning")
        logger.warning("%s: %s: unknown key, ignored%s", source, _join(path, key), hint)
    values = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DataConfigError(f"{source}: {key}: required key is missing")
            continue
        values[name] = _value(hints[name], raw[name], key, source, allow_unknown)
    return cls(**values)


def _value(hint: Any, value: Any, key: str, source: str, allow_unknown: bool = False) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source, allow_unknown)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise DataConfigError(f"{source}: {key}: expected {hint.__name__}, got {_describe(value)}")
    return value


def _check(config: DataConfig, source: str) -> None:
    param = config.dataset_param
    basic = param.basic_parameters
    prefix = "dataset_param.basic_parameters"

    def fail(key: str, message: str) -> None:
        raise DataConfigError(f"{source}: {key}: {message}")

    if not (basic.data_path or basic.dataset):
        fail(f"{prefix}.data_path", "set data_path (InternVL/LLaVA layout) or dataset (mllm layout)")
    if basic.data_path and basic.dataset:
        fail(f"{prefix}.dataset", "set only one of data_path and dataset")
    template = basic.template_name or basic.template
    if template is None:
        fail(f"{prefix}.template_name", f"required; one of {TEMPLATES}")
    if template not in TEMPLATES:
        key = "template_name" if basic.template_name else "template"
        fail(f"{prefix}.{key}", f"unknown template {template!r}; expected one of {TEMPLATES}")
    family = config.dataloader_param.collate_param.model_name
    if family is not None and family not in MODEL_FAMILIES:
        fail("dataloader_param.collate_param.model_name", f"unknown model {family!r}; expected one of {MODEL_FAMILIES}")
    if config.tokenizer_path is None:
        fail("dataset_param.tokenizer_config.from_pretrained", "required (or preprocess_parameters.model_name_or_path)")
    positive = {
        "dataset_param.image_size": param.image_size,
        "dataset_param.patch_size": param.patch_size,
        "dataset_param.min_dynamic_patch": param.min_dynamic_patch,
        "dataset_param.min_num_frame": param.min_num_frame,
        "dataset_param.crop_size": param.crop_size,
        f"{prefix}.repeat_time": basic.repeat_time,
        "dataloader_param.micro_batch_size": config.dataloader_param.micro_batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            fail(key, f"must be positive, got {value}")
    if config.dataloader_param.num_workers < 0:
        fail("dataloader_param.num_workers", "must be >= 0")
    if basic.val_rate is not None and not 0.0 <= basic.val_rate < 1.0:
        fail(f"{prefix}.val_rate", f"the share of the records held out for validation must lie in [0, 1), "
                                   f"got {basic.val_rate}")
    if basic.val_max_samples is not None and basic.val_max_samples <= 0:
        fail(f"{prefix}.val_max_samples", f"must be positive, got {basic.val_max_samples}")
    if basic.val_max_samples is not None and not basic.val_dataset:
        fail(f"{prefix}.val_max_samples", "limits val_dataset, which is not set")
    if param.attr.packing and not basic.neat_packing:
        fail("dataset_param.attr.packing", "packing with attention across the packed samples (MindSpeed-MM without "
                                           f"neat_packing) is not implemented; msmm packs with block-diagonal attention: "
                                           f"set {prefix}.neat_packing true (or dataloader_param.packing)")
    if param.attr.packing:
        config.dataloader_param.packing = True
    elif basic.neat_packing:
        logger.info("%s: %s.neat_packing: no effect without dataset_param.attr.packing (as in MindSpeed-MM)",
                    source, prefix)
    if basic.val_dataset and basic.val_rate:
        logger.warning("%s: %s.val_rate %s: no effect, val_dataset gives the validation data (as in MindSpeed-MM)",
                       source, prefix, basic.val_rate)
    pairs = (
        ("dataset_param.max_dynamic_patch", param.min_dynamic_patch, param.max_dynamic_patch),
        ("dataset_param.max_num_frame", param.min_num_frame, param.max_num_frame),
        ("dataset_param.preprocess_parameters.image_max_pixels",
         param.preprocess_parameters.image_min_pixels, param.preprocess_parameters.image_max_pixels),
        ("dataset_param.preprocess_parameters.video_max_pixels",
         param.preprocess_parameters.video_min_pixels, param.preprocess_parameters.video_max_pixels),
    )
    for key, low, high in pairs:
        if high < low:
            fail(key, f"{high} is smaller than the matching minimum {low}")
    if param.image_size % param.patch_size:
        fail("dataset_param.image_size", f"{param.image_size} is not a multiple of patch_size {param.patch_size}")
    method = param.sampling_method
    if not (method in ("rand", "middle") or (method.startswith("fps") and _is_float(method[3:]))):
        fail("dataset_param.sampling_method", f"{method!r}; expected 'rand', 'middle' or 'fps<rate>'")


def _is_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
