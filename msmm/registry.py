"""The model families msmm supports, one ``FamilySpec`` each: everything that differs per
family is declared here (or in the one model file and the one rename table an entry names),
and every other part of msmm looks it up.

Framework-free (``mm-convert`` reads it without importing MindSpore or torch): the model
side is named by its module in ``msmm.models`` and resolved there
(``msmm.models.pretrained``).

Adding a family: a ``FamilySpec`` below, its model file in ``msmm/models/`` (the model class
with ``from_hf_config`` / ``from_model_json``), and its ``Naming`` in ``msmm/checkpoint/names.py``
(docs/architecture.md).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .checkpoint.mm import ModelInfo
from .checkpoint.names import INTERNVL, LLAVA, QWEN2_VL, Naming

# text decoder families -> the HF architectures that name them (config.json ``architectures``)
TEXT_FAMILIES: Dict[str, Tuple[str, ...]] = {
    "qwen2": ("Qwen2ForCausalLM",),
    "llama": ("LlamaForCausalLM",),
    "internlm2": ("InternLM2ForCausalLM",),
}

# model.json section paths of a vision-language model
VISION_ENCODER = "image_encoder.vision_encoder"
VISION_PROJECTOR = "image_encoder.vision_projector"
TEXT_DECODER = "text_decoder"
SECTIONS = (VISION_ENCODER, VISION_PROJECTOR, TEXT_DECODER)


class UnknownFamilyError(ValueError):
    pass


def text_family_of(text_config: Mapping[str, Any], where: str) -> str:
    """The decoder family of an HF text config dict, from ``model_type`` or ``architectures``."""
    family = text_config.get("model_type")
    if family in TEXT_FAMILIES:
        return family
    for arch in text_config.get("architectures") or ():
        for name, archs in TEXT_FAMILIES.items():
            if arch in archs:
                return name
    raise ValueError(f"{where}: text model (model_type={text_config.get('model_type')!r}, "
                     f"architectures={text_config.get('architectures')!r}) is not one of {sorted(TEXT_FAMILIES)}")


# ---- what mm-convert reads from config.json --------------------------------------------------

def _require(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise KeyError(f"{where}: missing {key!r}")
    return cfg[key]


def _text_info(text: Mapping[str, Any], top: Mapping[str, Any], where: str) -> Dict[str, Any]:
    heads = _require(text, "num_attention_heads", where)
    return dict(
        llm_layers=_require(text, "num_hidden_layers", where),
        llm_heads=heads,
        llm_kv_heads=text.get("num_key_value_heads") or heads,
        vocab_size=text.get("vocab_size", top.get("vocab_size")),
        tie_word_embeddings=bool(top.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
    )


def _qwen2_vl_info(cfg: Mapping[str, Any], where: str) -> ModelInfo:
    vision = _require(cfg, "vision_config", where)
    return ModelInfo(vit_layers=_require(vision, "depth", where), vit_heads=_require(vision, "num_heads", where),
                     layout="hf", **_text_info(cfg.get("text_config") or cfg, cfg, where))


def _internvl_layout(cfg: Mapping[str, Any]) -> str:
    """HF-native configs carry ``text_config``; OpenGVLab's remote-code ones ``llm_config``."""
    return "remote" if "llm_config" in cfg and "text_config" not in cfg else "hf"


def _text_config(cfg: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The text model's config: ``text_config`` (HF), ``llm_config`` (InternVL remote code)."""
    text = cfg.get("text_config") or cfg.get("llm_config")
    if not isinstance(text, dict):
        raise KeyError(f"{where}: the config needs 'text_config' (HF-native) or 'llm_config' (InternVL remote code)")
    return text


def text_section(cfg: Mapping[str, Any]) -> Tuple[str, Mapping[str, Any]]:
    """(key prefix, dict) of the text model's numbers in a config.json: ``text_config``
    (HF-native), ``llm_config`` (InternVL remote code) or the top level (Qwen2-VL)."""
    for key in ("text_config", "llm_config"):
        if isinstance(cfg.get(key), dict):
            return key + ".", cfg[key]
    return "", cfg


def _internvl_info(cfg: Mapping[str, Any], where: str) -> ModelInfo:
    vision = _require(cfg, "vision_config", where)
    return ModelInfo(vit_layers=_require(vision, "num_hidden_layers", where),
                     vit_heads=_require(vision, "num_attention_heads", where), layout=_internvl_layout(cfg),
                     **_text_info(_text_config(cfg, where), cfg, where))


def _llava_info(cfg: Mapping[str, Any], where: str) -> ModelInfo:
    vision = _require(cfg, "vision_config", where)
    return ModelInfo(vit_layers=_require(vision, "num_hidden_layers", where),
                     vit_heads=_require(vision, "num_attention_heads", where), layout="hf",
                     **_text_info(_require(cfg, "text_config", where), cfg, where))


@dataclass(frozen=True)
class FamilySpec:
    """One model family."""

    name: str  # canonical: model.json ``model_id``, inference ``model.family``
    title: str
    aliases: Tuple[str, ...]  # other spellings of ``name`` that are accepted
    hf_model_types: Tuple[str, ...]  # config.json ``model_type`` values
    model_module: str  # the model file in msmm/models (``from_hf_config``, ``from_model_json``)
    section_models: Mapping[str, Tuple[str, ...]]  # model.json section -> the section model_ids that fit
    scalars: Mapping[str, type]  # top-level model.json keys besides model_id and the sections
    freeze: Mapping[str, Tuple[str, ...]]  # model.json section -> module paths its ``freeze`` covers
    naming: Naming  # checkpoint names (msmm/checkpoint/names.py)
    hf_info: Callable[[Mapping[str, Any], str], ModelInfo]  # what mm-convert needs from config.json
    data_family: str  # data.json ``model_name`` / preprocessing family (msmm.data)
    chat_template: str  # the default chat template (msmm.data.templates)
    converter: str  # mm-convert's name for it
    hf_layout: Callable[[Mapping[str, Any]], str] = lambda cfg: "hf"  # checkpoint layout of a config.json
    hf_marker_keys: Tuple[str, ...] = ()  # config.json keys only this family has (configs without model_type)
    mrope: bool = False  # text positions are M-RoPE (model.json text_decoder.mrope_section)

    def text_family(self, cfg: Mapping[str, Any], where: str = "config.json") -> Optional[str]:
        """The text decoder family of a config.json of this family (None: its own decoder)."""
        if self.naming.text_group is None:
            return None
        return text_family_of(_text_config(cfg, where), where)

    def check_hf_config(self, cfg: Mapping[str, Any], where: str) -> None:
        if cfg.get("model_type") not in self.hf_model_types:
            raise ValueError(f"{where}: model_type {cfg.get('model_type')!r}, this converter reads "
                             f"{self.hf_model_types} ({self.title})")


_QWEN2_VL = dict(
    aliases=(), model_module="qwen2_vl",
    section_models={VISION_ENCODER: ("qwen2_vit", "qwen2_5_vit"), VISION_PROJECTOR: ("patch_merger",),
                    TEXT_DECODER: ("qwen2",)},
    scalars={"image_token_id": int, "video_token_id": int, "vision_start_token_id": int},
    freeze={VISION_ENCODER: ("visual.patch_embed", "visual.blocks"), VISION_PROJECTOR: ("visual.merger",),
            TEXT_DECODER: ("model", "lm_head")},
    naming=QWEN2_VL, hf_info=_qwen2_vl_info, data_family="qwen2vl", chat_template="qwen2vl", mrope=True,
)
_VLM_FREEZE = {VISION_ENCODER: ("vision_tower",), VISION_PROJECTOR: ("multi_modal_projector",),
               TEXT_DECODER: ("language_model",)}

FAMILIES: Dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec(name="qwen2_vl", title="Qwen2-VL", hf_model_types=("qwen2_vl",), converter="Qwen2VLConverter",
               **dict(_QWEN2_VL, aliases=("qwen2vl", "Qwen2VL"))),
    FamilySpec(name="qwen2_5_vl", title="Qwen2.5-VL", hf_model_types=("qwen2_5_vl",), converter="Qwen2_5_VLConverter",
               **dict(_QWEN2_VL, aliases=("qwen2_5vl", "Qwen2_5_VL"))),
    FamilySpec(
        name="internvl", title="InternVL", aliases=("InternVL",), hf_model_types=("internvl", "internvl_chat"),
        model_module="internvl",
        section_models={VISION_ENCODER: ("intern_vit",), VISION_PROJECTOR: ("pixel_shuffle_mlp",),
                        TEXT_DECODER: ("qwen2", "internlm2", "llama")},
        scalars={"image_token_id": int},  # id of <IMG_CONTEXT>
        freeze=_VLM_FREEZE, naming=INTERNVL, hf_info=_internvl_info, hf_layout=_internvl_layout,
        hf_marker_keys=("llm_config",),
        data_family="internvl", chat_template="internvl2_5", converter="InternVLConverter"),
    FamilySpec(
        name="llava", title="LLaVA-1.5", aliases=("Llava", "LLaVA"), hf_model_types=("llava",), model_module="llava",
        section_models={VISION_ENCODER: ("clip_vit",), VISION_PROJECTOR: ("mlp",), TEXT_DECODER: ("llama", "qwen2")},
        scalars={"image_token_id": int},  # id of <image>
        freeze=_VLM_FREEZE, naming=LLAVA, hf_info=_llava_info,
        data_family="llava", chat_template="llava-v1", converter="LlavaConverter"),
)}


def get_family(name: str, where: str = "model family") -> FamilySpec:
    """The family called ``name`` (its canonical name or an alias); errors list the choices."""
    if name in FAMILIES:
        return FAMILIES[name]
    for spec in FAMILIES.values():
        if name in spec.aliases:
            return spec
    close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
    raise UnknownFamilyError(f"{where}: unknown model family {name!r}; known: {sorted(FAMILIES)}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))


def family_of_hf_config(cfg: Mapping[str, Any], where: str = "config.json") -> FamilySpec:
    """The family of a config.json, from its ``model_type`` (or, without one, from the keys
    only one family's configs have)."""
    model_type = cfg.get("model_type")
    for spec in FAMILIES.values():
        if model_type in spec.hf_model_types or (model_type is None and any(k in cfg for k in spec.hf_marker_keys)):
            return spec
    known = sorted(t for s in FAMILIES.values() for t in s.hf_model_types)
    raise UnknownFamilyError(f"{where}: model_type {model_type!r} is not a supported family; known: {known}")


def data_families() -> Tuple[str, ...]:
    return tuple(sorted({spec.data_family for spec in FAMILIES.values()}))
