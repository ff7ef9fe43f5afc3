"""Per-family knowledge: HF checkpoint names <-> MM names (msmm's parameter names, which
the trainer saves), fused tensors, and the model dimensions read from ``config.json``.

A name rule is a pair of literal fragments, each optionally anchored with ``^``/``$``; it
applies HF -> MM and, the other way round, MM -> HF, so one table serves ``hf_to_mm`` and
``mm_to_hf``. A group of rules applies below a prefix (``vision_model.`` -> ``vision_tower.``)
so text rules never touch vision keys. ``read_aliases`` are extra input prefixes (the
in-memory names of transformers >= 4.52); output always uses the saved names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .parallel import COLUMN, FUSED_QKV, REPLICATED, ROW, VOCAB

Rule = Tuple[str, str]  # (HF fragment, MM fragment), "^"/"$" anchors allowed
Group = Tuple[str, str, Sequence[Rule]]  # (HF prefix, MM prefix, rules below the prefix)


def _pattern(fragment: str) -> Tuple[re.Pattern, str]:
    start, end = fragment.startswith("^"), fragment.endswith("$")
    core = fragment[1 if start else 0: len(fragment) - (1 if end else 0)]
    return re.compile(("^" if start else "") + re.escape(core) + ("$" if end else "")), core


def _apply(key: str, rules: Sequence[Rule], to_mm: bool) -> str:
    for hf, mm in rules:
        (pattern, _), (_, replacement) = (_pattern(hf), _pattern(mm)) if to_mm else (_pattern(mm), _pattern(hf))
        key = pattern.sub(replacement.replace("\\", "\\\\"), key)
    return key


def rename(key: str, groups: Sequence[Group], to_mm: bool) -> Optional[str]:
    """``key`` under the first group whose prefix starts it, or None (unexpected key)."""
    for hf, mm, rules in groups:
        old, new = (hf, mm) if to_mm else (mm, hf)
        if key.startswith(old):
            return new + _apply(key[len(old):], rules, to_mm)
    return None


# ---- what every MM name is: pipeline placement and tensor-parallel split ---------------------

LLM_LAYER = re.compile(r"^((?:language_model\.)?model\.layers\.)(\d+)(\..+)$")
VIT_LAYER = re.compile(r"^((?:vision_tower\.encoder\.layers?|visual\.blocks)\.)(\d+)(\..+)$")
VIT_POST = re.compile(r"^(multi_modal_projector\.|visual\.merger\.|vision_tower\.(post_layernorm|layernorm)\.)")
VIT_PRE = re.compile(r"^(vision_tower|visual)\.")
LLM_PRE = re.compile(r"^(language_model\.)?model\.embed_tokens\.weight$")
LLM_POST = re.compile(r"^(language_model\.)?(model\.norm\.weight|lm_head\.weight)$")

_NORMS = (r"input_layernorm|post_attention_layernorm|norm|norm1|norm2|layer_norm1|layer_norm2|layernorm_before|"
          r"layernorm_after|layer_norm|ln_q|pre_layrnorm|post_layernorm|layernorm")
_ROW = r"o_proj|down_proj|wo|w2|out_proj|projection_layer|fc2|attn\.proj|linear_2|mlp\.2"
_COLUMN = r"q_proj|k_proj|v_proj|q_norm|k_norm|gate_proj|up_proj|w1|w3|wqkv|fc1|linear_1|mlp\.0"
TP_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"(^|\.)(embed_tokens|lm_head)\.weight$"), VOCAB),
    (re.compile(r"\.attn\.qkv\.(weight|bias)$"), FUSED_QKV),
    (re.compile(rf"\.({_ROW})\.weight$"), ROW),
    (re.compile(rf"\.({_ROW})\.bias$"), REPLICATED),
    (re.compile(rf"\.({_COLUMN})\.(weight|bias)$"), COLUMN),
    (re.compile(rf"\.({_NORMS})\.(weight|bias)$"), REPLICATED),
    (re.compile(r"\.embeddings\.(cls_token|class_embedding|position_embeddings|position_embedding\.weight|"
                r"patch_embedding\.(weight|bias)|patch_embeddings\.projection\.(weight|bias))$"), REPLICATED),
    (re.compile(r"\.patch_embed\.proj\.(weight|bias)$"), REPLICATED),
    (re.compile(r"\.lambda_[12]$"), REPLICATED),
]


def tp_kind(name: str, where: str) -> str:
    for pattern, kind in TP_RULES:
        if pattern.search(name):
            return kind
    raise KeyError(f"{where}: unexpected key {name!r} (no tensor-parallel rule knows it)")


# ---- families -----------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    """What conversion needs from config.json."""

    llm_layers: int
    vit_layers: int
    llm_heads: int
    llm_kv_heads: int
    vit_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    layout: str  # which HF naming the checkpoint uses ("hf" or "remote")


@dataclass
class Unfuse:
    """An HF tensor stored fused whose MM form is split in equal row chunks."""

    mm: re.Pattern  # MM name of the fused tensor, groups (stem, param)
    parts: Tuple[str, ...]  # MM names of the pieces replace the fused module name


@dataclass
class Family:
    groups: Dict[str, List[Group]]  # layout -> canonical (saved) groups
    read_aliases: Dict[str, List[Group]] = field(default_factory=dict)
    unfuse: Dict[str, List[Unfuse]] = field(default_factory=dict)


def _require(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise KeyError(f"{where}: missing {key!r}")
    return cfg[key]


def _check_model_type(cfg: Mapping[str, Any], allowed: Tuple[str, ...], where: str) -> None:
    if cfg.get("model_type") not in allowed:
        raise ValueError(f"{where}: model_type {cfg.get('model_type')!r}, this converter reads {allowed}")


def _text_info(text: Mapping[str, Any], top: Mapping[str, Any], where: str) -> Dict[str, Any]:
    heads = _require(text, "num_attention_heads", where)
    return dict(
        llm_layers=_require(text, "num_hidden_layers", where),
        llm_heads=heads,
        llm_kv_heads=text.get("num_key_value_heads") or heads,
        vocab_size=text.get("vocab_size", top.get("vocab_size")),
        tie_word_embeddings=bool(top.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
    )


INTERNLM2_RULES: List[Rule] = [
    ("^model.tok_embeddings.", "^model.embed_tokens."),
    (".attention.", ".self_attn."),
    (".feed_forward.", ".mlp."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
    ("^output.", "^lm_head."),
]
REMOTE_VISION_RULES: List[Rule] = [
    ("^embeddings.class_embedding$", "^embeddings.cls_token$"),
    ("^embeddings.patch_embedding.", "^embeddings.patch_embeddings.projection."),
    ("^embeddings.position_embedding$", "^embeddings.position_embeddings$"),
    ("^encoder.layers.", "^encoder.layer."),
    (".attn.proj.", ".attention.projection_layer."),
    (".attn.", ".attention."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".ls1$", ".lambda_1$"),
    (".ls2$", ".lambda_2$"),
]
REMOTE_PROJECTOR_RULES: List[Rule] = [("^0.", "^layer_norm."), ("^1.", "^linear_1."), ("^3.", "^linear_2.")]


class FamilySpec:
    """A model family: its ``Family`` tables and ``info`` (dimensions from config.json)."""

    family: Family

    def info(self, cfg: Mapping[str, Any], where: str) -> ModelInfo:
        raise NotImplementedError

    def groups(self, cfg: Mapping[str, Any], layout: str) -> List[Group]:
        return list(self.family.groups[layout])


class Qwen2VLFamily(FamilySpec):
    model_types = ("qwen2_vl",)
    family = Family(
        groups={"hf": [("visual.", "visual.", []), ("model.", "model.", []), ("lm_head.", "lm_head.", [])]},
        read_aliases={"hf": [("model.visual.", "visual.", []), ("model.language_model.", "model.", [])]},
    )

    def info(self, cfg: Mapping[str, Any], where: str) -> ModelInfo:
        _check_model_type(cfg, self.model_types, where)
        vision = _require(cfg, "vision_config", where)
        text = cfg.get("text_config") or cfg
        return ModelInfo(vit_layers=_require(vision, "depth", where), vit_heads=_require(vision, "num_heads", where),
                         layout="hf", **_text_info(text, cfg, where))


class Qwen2_5_VLFamily(Qwen2VLFamily):
    model_types = ("qwen2_5_vl",)


class InternVLFamily(FamilySpec):
    family = Family(
        groups={
            "hf": [("vision_tower.", "vision_tower.", []), ("multi_modal_projector.", "multi_modal_projector.", []),
                   ("language_model.", "language_model.", [])],
            "remote": [("vision_model.", "vision_tower.", REMOTE_VISION_RULES),
                       ("mlp1.", "multi_modal_projector.", REMOTE_PROJECTOR_RULES),
                       ("language_model.", "language_model.", [])],
        },
        read_aliases={"hf": [("model.vision_tower.", "vision_tower.", []),
                             ("model.multi_modal_projector.", "multi_modal_projector.", []),
                             ("model.language_model.", "language_model.model.", []),
                             ("lm_head.", "language_model.lm_head.", [])]},
        unfuse={"remote": [Unfuse(re.compile(r"^(vision_tower\.encoder\.layer\.\d+\.attention)\.qkv\.(weight|bias)$"),
                                  ("q_proj", "k_proj", "v_proj"))]},
    )

    def info(self, cfg: Mapping[str, Any], where: str) -> ModelInfo:
        _check_model_type(cfg, ("internvl", "internvl_chat"), where)
        vision = _require(cfg, "vision_config", where)
        if "text_config" in cfg:
            layout, text = "hf", cfg["text_config"]
        elif "llm_config" in cfg:
            layout, text = "remote", cfg["llm_config"]
        else:
            raise KeyError(f"{where}: an InternVL config needs 'text_config' (HF-native) or 'llm_config' (remote code)")
        return ModelInfo(vit_layers=_require(vision, "num_hidden_layers", where),
                         vit_heads=_require(vision, "num_attention_heads", where), layout=layout,
                         **_text_info(text, cfg, where))

    def groups(self, cfg: Mapping[str, Any], layout: str) -> List[Group]:
        groups = list(self.family.groups[layout])
        text = cfg.get("llm_config") or cfg.get("text_config") or {}
        is_internlm2 = text.get("model_type") == "internlm2" or "InternLM2ForCausalLM" in (text.get("architectures") or ())
        if is_internlm2:
            groups[-1] = ("language_model.", "language_model.", INTERNLM2_RULES)
        return groups


class LlavaFamily(FamilySpec):
    family = Family(
        groups={"hf": [("vision_tower.vision_model.", "vision_tower.", []),
                       ("multi_modal_projector.", "multi_modal_projector.", []),
                       ("language_model.", "language_model.", [])]},
        read_aliases={"hf": [("model.vision_tower.vision_model.", "vision_tower.", []),
                             ("model.multi_modal_projector.", "multi_modal_projector.", []),
                             ("model.language_model.", "language_model.model.", []),
                             ("lm_head.", "language_model.lm_head.", [])]},
    )

    def info(self, cfg: Mapping[str, Any], where: str) -> ModelInfo:
        _check_model_type(cfg, ("llava",), where)
        vision = _require(cfg, "vision_config", where)
        return ModelInfo(vit_layers=_require(vision, "num_hidden_layers", where),
                         vit_heads=_require(vision, "num_attention_heads", where), layout="hf",
                         **_text_info(_require(cfg, "text_config", where), cfg, where))
