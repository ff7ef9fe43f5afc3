"""MindSpeed-MM's ``inference_*.json`` for ``msmm-infer``: its model sections, tokenizer, prompt,
image path and HF ``generation_config``, read into what ``msmm-infer`` runs.

    {"pipeline_class": "Qwen2VlPipeline", "img_context_token_id": 151655,
     "image_encoder": {...}, "text_decoder": {...},            # model.json sections (either spelling)
     "tokenizer": {"hub_backend": "hf", "autotokenizer_name": "AutoTokenizer", "from_pretrained": "ckpt/hf"},
     "generation_config": {"max_new_tokens": 256, "do_sample": true, "temperature": 0.1, ...},
     "image_path": "demo.jpeg", "prompts": "Describe this image.",       # or "prompt" (the LLaVA guide's)
     "min_pixels": 1003520, "max_pixels": 12845056}

The model is built from the sections (``msmm.config.mindspeed_model`` reads MindSpeed-MM's
spelling) and its weights come from the sections' ``ckpt_path`` (LLaVA), ``from_pretrained``
(InternVL) or ``msmm-infer --load DIR`` (the launch scripts' ``--load $LOAD_PATH``): an HF
directory or an MM checkpoint, whose config is cross-checked against the sections. Prompts go
through the family's chat template and image preprocessing (``template``, ``min_pixels`` /
``max_pixels``, ``num_segments`` honoured). Every other key is honoured, accepted with a note
saying why it has no effect, or refused naming the file and key; generation keys of HF's
``GenerationConfig`` that msmm does not implement are accepted only at their default value.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..config.data_config import (
    Attributes, BasicParameters, CollateParam, DataConfig, DataloaderParam, DatasetParam, PreprocessParameters,
    TokenizerConfig,
)
from ..config.mindspeed_model import FAMILIES
from ..registry import get_family

# MindSpeed-MM's pipeline_class -> its model_id (Qwen2.5-VL: by the text decoder's model_id)
PIPELINES = {"Qwen2VlPipeline": "qwen2vl", "InternVLPipeline": "InternVL", "LlavaPipeline": "llava"}
MODEL_KEYS = ("model_id", "image_encoder", "text_decoder", "text_encoder", "video_encoder", "img_context_token_id",
              "image_token_id", "video_token_id", "vision_start_token_id", "pre_process", "post_process",
              "add_text_encoder", "img_embedding_idx", "downsample_ratio", "select_layer", "ps_version",
              "add_rmsnorm_offset")
NO_EFFECT = {"device": "the device comes from MSMM_DEVICE", "pipeline_class": "the family comes from the model",
             "patch": "switches of MindSpeed-MM's code patches"}
# HF GenerationConfig keys msmm does not implement, accepted at HF's default (which is what msmm does)
GENERATION_DEFAULTS = {
    "num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "num_return_groups": 1, "diversity_penalty": 0.0,
    "length_penalty": 1.0, "early_stopping": False, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_length": 0,
    "min_new_tokens": None, "min_p": None, "constraints": None, "bad_words_ids": None, "force_words_ids": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "forced_decoder_ids": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "guidance_scale": None, "prompt_lookup_num_tokens": None, "penalty_alpha": None, "max_time": None,
    "low_memory": None, "renormalize_logits": False, "remove_invalid_values": False, "output_attentions": False,
    "output_hidden_states": False, "output_scores": False, "output_logits": None, "return_dict_in_generate": False,
    "decoder_start_token_id": None, "dola_layers": None, "cache_implementation": None, "cache_config": None,
    "return_legacy_cache": None, "token_healing": False, "watermarking_config": None, "max_matching_ngram_size": None,
    "stop_strings": None, "num_assistant_tokens": 5, "num_assistant_tokens_schedule": "heuristic",
}
GENERATION_NO_EFFECT = {"use_cache": "msmm always decodes over a KV cache (the same tokens)", "kv_cache": "the same",
                        "bos_token_id": "the chat template writes the prompt's first token"}
GENERATION_MAPPED = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                     "pad_token_id")
# the model's token ids a generation_config may repeat: checked against the model
GENERATION_TOKEN_IDS = ("image_token_id", "video_token_id", "vision_start_token_id")
CHAT_TEMPLATES = {"internvl": ("internvl2_5", "internlm2-chat"), "qwen2vl": ("qwen2vl",), "llava": ("llava-v1",)}
TOKENIZER_KEYS = ("hub_backend", "autotokenizer_name", "from_pretrained", "model_max_length", "add_eos_token",
                  "use_fast", "trust_remote_code")


class MindSpeedInferenceError(ValueError):
    """A MindSpeed-MM inference JSON problem; the message names the file and key."""


@dataclass
class MindSpeedInference:
    """What ``msmm-infer`` runs for a MindSpeed-MM inference JSON."""

    family: str  # msmm's family name
    model_json: Dict[str, Any]  # the model sections (a model.json, either spelling)
    weights: Optional[str]  # from_pretrained / --load: an HF directory or an MM checkpoint (None: ckpt_path)
    tokenizer: Dict[str, Any]  # from_pretrained, trust_remote_code
    prompts: List[Dict[str, Any]]  # {"prompt", "images", "videos"}
    generation: Dict[str, Any]  # msmm's GenerationConfig fields
    data: DataConfig  # the chat template and preprocessing the prompts go through
    dtype: str = "fp32"
    context: Optional[int] = None  # tokenizer.model_max_length / generation_config.max_length
    notes: List[str] = field(default_factory=list)


def is_mindspeed_inference(cfg: Mapping[str, Any]) -> bool:
    """MindSpeed-MM's shape: no ``model`` object (msmm's), and model sections at the top level,
    a pipeline_class, or its prompt keys."""
    return "model" not in cfg and (any(k in cfg for k in ("pipeline_class", "image_encoder", "text_decoder", "prompt",
                                                           "image_path", "file_path"))
                                   or isinstance(cfg.get("prompts"), str))


def _fail(path: str, key: str, message: str) -> None:
    raise MindSpeedInferenceError(f"{path}: {key}: {message}")


def _unknown(path: str, key: str, known) -> None:
    close = difflib.get_close_matches(key.split(".")[-1], list(known), n=1)
    _fail(path, key, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _model_part(cfg: Mapping[str, Any], path: str) -> Dict[str, Any]:
    model = {k: v for k, v in cfg.items() if k in MODEL_KEYS}
    if "model_id" not in model:
        pipeline = cfg.get("pipeline_class")
        if pipeline not in PIPELINES:
            _fail(path, "pipeline_class", f"{pipeline!r}: expected one of {sorted(PIPELINES)} (or give model_id)")
        text_id = (cfg.get("text_decoder") or {}).get("model_id")
        model["model_id"] = "qwen2_5vl" if PIPELINES[pipeline] == "qwen2vl" and text_id == "qwen2_5_lm" \
            else PIPELINES[pipeline]
    return model


def _family(model: Mapping[str, Any], path: str) -> str:
    name = FAMILIES.get(model["model_id"], model["model_id"])
    try:
        return get_family(name, f"{path}: model_id").name
    except ValueError as err:
        raise MindSpeedInferenceError(str(err)) from err


def _prompts(cfg: Mapping[str, Any], path: str) -> List[Dict[str, Any]]:
    if "prompt" in cfg and "prompts" in cfg:
        _fail(path, "prompt", "give prompt or prompts, not both")
    key = "prompt" if "prompt" in cfg else "prompts"
    texts = cfg.get(key)
    texts = [texts] if isinstance(texts, str) else texts
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
        _fail(path, key, f"expected a prompt (a string) or a list of them, got {json.dumps(cfg.get(key))[:40]}")
    media = {"images": [], "videos": []}
    for name in ("image_path", "file_path"):
        if name in cfg:
            if not isinstance(cfg[name], str):
                _fail(path, name, f"expected a path, got {cfg[name]!r}")
            kind = cfg.get("infer_data_type", "image") if name == "file_path" else "image"
            if kind not in ("image", "video"):
                _fail(path, "infer_data_type", f"{kind!r}: expected 'image' or 'video'")
            media[f"{kind}s"].append(cfg[name])
    return [{"prompt": text, **media} for text in texts]


def _generation(gen: Any, path: str, model: Mapping[str, Any], notes: List[str]) -> Dict[str, Any]:
    if not isinstance(gen, dict):
        _fail(path, "generation_config", f"expected an object, got {type(gen).__name__}")
    out: Dict[str, Any] = {}
    for key, value in gen.items():
        where = f"generation_config.{key}"
        if value is None and key in (*GENERATION_MAPPED, "eos_token_id", "max_length"):
            continue  # HF's "unset": msmm's default
        if key in GENERATION_MAPPED:
            out[key] = value
        elif key == "eos_token_id":
            out["stop_token_ids"] = [value] if isinstance(value, int) else value
        elif key in ("max_length",):
            continue  # read by load_mindspeed_inference as the context
        elif key in GENERATION_NO_EFFECT:
            notes.append(f"{path}: {where}: no effect ({GENERATION_NO_EFFECT[key]})")
        elif key in GENERATION_TOKEN_IDS:
            ours = model.get(key, model.get("img_context_token_id") if key == "image_token_id" else None)
            if ours is not None and value != ours:
                _fail(path, where, f"{value} differs from the model's {key} {ours}")
        elif key in GENERATION_DEFAULTS:
            if value != GENERATION_DEFAULTS[key]:
                _fail(path, where, f"{json.dumps(value)}: not implemented in msmm-infer (only "
                                   f"{json.dumps(GENERATION_DEFAULTS[key])}, HF's default, is accepted)")
        else:
            _unknown(path, where, [*GENERATION_MAPPED, "eos_token_id", "max_length", *GENERATION_NO_EFFECT,
                                   *GENERATION_TOKEN_IDS, *GENERATION_DEFAULTS])
    return out


def _tokenizer(raw: Any, path: str, notes: List[str]) -> Dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("from_pretrained"), str):
        _fail(path, "tokenizer.from_pretrained", "required (the tokenizer's directory)")
    for key, value in raw.items():
        if key not in TOKENIZER_KEYS:
            _unknown(path, f"tokenizer.{key}", TOKENIZER_KEYS)
    if raw.get("hub_backend", "hf") != "hf" or raw.get("autotokenizer_name", "AutoTokenizer") != "AutoTokenizer":
        _fail(path, "tokenizer.hub_backend", "only HF's AutoTokenizer (hub_backend 'hf') is read")
    if raw.get("add_eos_token"):
        _fail(path, "tokenizer.add_eos_token", "true would end every prompt with EOS; msmm-infer prompts end with "
                                               "the assistant's turn")
    if raw.get("use_fast") is False:
        notes.append(f"{path}: tokenizer.use_fast: false has no effect (msmm reads token offsets: the fast tokenizer "
                     "gives the same ids)")
    return raw


def _data_config(cfg: Mapping[str, Any], family: str, tokenizer: Mapping[str, Any], model: Mapping[str, Any],
                 path: str) -> DataConfig:
    """The preprocessing and chat template of MindSpeed-MM's pipeline for ``family``."""
    data_family = get_family(family).data_family
    template = cfg.get("template", CHAT_TEMPLATES[data_family][0])
    if template not in CHAT_TEMPLATES[data_family]:
        _fail(path, "template", f"{template!r}: expected one of {CHAT_TEMPLATES[data_family]}")
    pre = PreprocessParameters()
    for key, field_name in (("min_pixels", "image_min_pixels"), ("max_pixels", "image_max_pixels")):
        if key in cfg:
            if data_family != "qwen2vl":
                _fail(path, key, "only Qwen2-VL / Qwen2.5-VL resize images by pixel count")
            setattr(pre, field_name, cfg[key])
    vision = (model.get("image_encoder") or {}).get("vision_encoder") or {}
    param = DatasetParam(BasicParameters(template=template), preprocess_parameters=pre,
                         tokenizer_config=TokenizerConfig(from_pretrained=tokenizer["from_pretrained"],
                                                          trust_remote_code=tokenizer.get("trust_remote_code", False)),
                         attr=Attributes(), sampling_method="middle")
    if data_family == "internvl":  # InternVLPipeline: 12 tiles + thumbnail per image, num_segments frames per video
        param.max_dynamic_patch = 12
        param.image_size = vision.get("image_size", param.image_size)
        frames = cfg.get("num_segments", 8)
        param.min_num_frame = param.max_num_frame = frames
    elif "num_segments" in cfg:
        _fail(path, "num_segments", "only InternVL samples a fixed number of video frames")
    if data_family == "llava":
        param.crop_size = vision.get("image_size", param.crop_size)
        param.patch_size = vision.get("patch_size", param.patch_size)
    return DataConfig(param, DataloaderParam(collate_param=CollateParam(model_name=data_family)), source=path)


def load_mindspeed_inference(cfg: Mapping[str, Any], path: str, load: Optional[str] = None) -> MindSpeedInference:
    """Read a MindSpeed-MM inference JSON (``cfg``, from ``path``); ``load``: ``msmm-infer --load``."""
    notes: List[str] = []
    model = _model_part(cfg, path)
    family = _family(model, path)
    tokenizer = _tokenizer(cfg.get("tokenizer"), path, notes)
    generation = _generation(cfg.get("generation_config", {}), path, model, notes)
    known = {*MODEL_KEYS, *NO_EFFECT, "tokenizer", "generation_config", "prompt", "prompts", "image_path", "file_path",
             "infer_data_type", "from_pretrained", "template", "dtype", "num_segments", "min_pixels", "max_pixels",
             "image_processer_path"}
    for key in cfg:
        if key not in known:
            _unknown(path, key, known)
        elif key in NO_EFFECT:
            notes.append(f"{path}: {key}: no effect ({NO_EFFECT[key]})")
    if "image_processer_path" in cfg:
        notes.append(f"{path}: image_processer_path: no effect (msmm's CLIP preprocessing: resize, centre crop to the "
                     "ViT's image_size, CLIP mean/std, as CLIPImageProcessor)")
    dtype = cfg.get("dtype", "fp32")
    if dtype not in ("bf16", "fp16", "fp32"):
        _fail(path, "dtype", f"{dtype!r}: expected 'bf16', 'fp16' or 'fp32'")
    weights = cfg.get("from_pretrained")
    for key, value in (("from_pretrained", weights), ("--load", load)):
        if value is not None and os.path.isfile(value):
            _fail(path, key, f"{value} is a file: give an HF checkpoint directory or an MM checkpoint (mm-convert "
                             "hf_to_mm / msmm-train output); MindSpeed-MM's model_optim_rng.pt files are not read")
    if load is not None and weights is not None and load != weights:
        _fail(path, "from_pretrained", f"{weights} and --load {load} name different checkpoints; give one")
    context = [c for c in (tokenizer.get("model_max_length"), (cfg.get("generation_config") or {}).get("max_length"))
               if isinstance(c, int)]
    return MindSpeedInference(
        family=family, model_json=model, weights=load or weights,
        tokenizer={"from_pretrained": tokenizer["from_pretrained"],
                   "trust_remote_code": bool(tokenizer.get("trust_remote_code", False))},
        prompts=_prompts(cfg, path), generation=generation, data=_data_config(cfg, family, tokenizer, model, path),
        dtype=dtype, context=min(context) if context else None, notes=notes)
