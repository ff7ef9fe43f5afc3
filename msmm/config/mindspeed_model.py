"""MindSpeed-MM's own ``model.json`` (and the model part of its ``inference_*.json``) in msmm's.

MindSpeed-MM spells the families' sections with its own ``model_id``s (``qwen2vit`` / ``lnmlp`` /
``qwen2lm`` / ``qwen2_5_lm``, ``InternViT`` / ``InternVLMLP`` / ``internllm`` / ``Qwen2.5llm``,
``clip`` / ``mlp`` and a text decoder without one for LLaVA) and Megatron's keys. ``from_mindspeed``
rewrites such a file into msmm's model.json; every key is one of:

* mapped onto msmm's key (``rope_theta`` -> ``rotary_base``, ``window_attn_size`` -> ``window_size``...);
* checked: a value msmm's model of that section computes with (``normalization``, ``activation_func``,
  ``gated_linear_unit``, biases, a width that must equal another section's); any other value is
  refused, naming the key and what msmm computes;
* accepted without effect, with the reason in the notes it returns (kernel fusions, dtype switches
  the launch flags set, parallel and recompute hints the launch flags give);
* refused: an unknown key (with the closest known one) or a feature msmm does not implement.

Errors are ``MindSpeedModelError`` naming the file and the dotted key.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Tuple

from .unknown_keys import did_you_mean, unknown_key

TEXT, VISION, PROJECTOR = "text_decoder", "image_encoder.vision_encoder", "image_encoder.vision_projector"

# upstream top-level model_id -> msmm family
FAMILIES = {"qwen2vl": "qwen2_vl", "qwen2_5vl": "qwen2_5_vl", "InternVL": "internvl", "InternVL3": "internvl",
            "llava": "llava"}
# upstream section model_id -> msmm section model_id, per msmm family ("" : LLaVA's text decoder has none)
SECTION_IDS = {
    "qwen2_vl": {VISION: {"qwen2vit": "qwen2_vit"}, PROJECTOR: {"lnmlp": "patch_merger"}, TEXT: {"qwen2lm": "qwen2"}},
    "qwen2_5_vl": {VISION: {"qwen2vit": "qwen2_5_vit", "qwen2_5_vit": "qwen2_5_vit"},
                   PROJECTOR: {"lnmlp": "patch_merger"}, TEXT: {"qwen2_5_lm": "qwen2", "qwen2lm": "qwen2"}},
    "internvl": {VISION: {"InternViT": "intern_vit"}, PROJECTOR: {"InternVLMLP": "pixel_shuffle_mlp"},
                 TEXT: {"internllm": "internlm2", "Qwen2.5llm": "qwen2", "qwen2lm": "qwen2", "llamalm": "llama"}},
    "llava": {VISION: {"clip": "clip_vit"}, PROJECTOR: {"mlp": "mlp"}, TEXT: {"": "llama"}},
}
# the ids that tell MindSpeed-MM's spelling apart ("mlp" and "qwen2_5_vit" are msmm's ids too)
UPSTREAM_SECTION_IDS = {i for family in SECTION_IDS.values() for ids in family.values() for i in ids if i} - {
    "mlp", "qwen2_5_vit"}

class MindSpeedModelError(ValueError):
    """A MindSpeed-MM model.json key msmm cannot honour; the message names the file and key."""


class Section:
    """One upstream section being rewritten: ``out`` collects msmm's keys, ``relations`` the
    keys that must equal (or, absent there, set) a key elsewhere in the file."""

    def __init__(self, where: str, path: str, model_id: str, notes: List[str]) -> None:
        self.where, self.path, self.model_id, self.notes = where, path, model_id, notes
        self.out: Dict[str, Any] = {}
        self.relations: List[Tuple[str, Any, Tuple[str, ...], str]] = []

    def fail(self, key: str, message: str) -> None:
        raise MindSpeedModelError(f"{self.where}{'.' if self.path else ': '}{key}: {message}")

    def set(self, key: str, value: Any, source: str) -> None:
        if key in self.out and self.out[key] != value:
            self.fail(source, f"{value!r} contradicts {self.out[key]!r} given for the same setting")
        self.out[key] = value


Handler = Callable[[Any, Section, str], None]


def described(doc: str, handler: Handler) -> Handler:
    """``handler`` with ``doc``: what msmm does with the key (docs/compat.md's table)."""
    handler.doc = doc
    return handler


def to(key: str, convert: Callable[[Any], Any] = lambda v: v, doc: str = "") -> Handler:
    """Mapped onto msmm's ``key``."""
    return described(f"honoured: msmm's `{key}`{doc}", lambda value, s, name: s.set(key, convert(value), name))


def must(expected: Any, what: str) -> Handler:
    """Honoured by checking: msmm's model computes with ``expected`` (``what`` says how)."""
    def check(value: Any, s: Section, name: str) -> None:
        if value != expected:
            s.fail(name, f"{value!r} is not supported: {what} ({expected!r})")
    return described(f"checked: only `{json.dumps(expected)}` ({what}), else refused", check)


def form(index: int, what: str) -> Handler:
    """Checked against the section model's (normalization, activation, gated MLP) in ``VISION_FORM``."""
    return described(f"checked: the model's own ({what} {', '.join(f'{m}: {f[index]}' for m, f in VISION_FORM.items())})"
                     ", else refused",
                     lambda value, s, name: must(VISION_FORM[s.model_id][index], f"{s.model_id} {what}")(value, s, name))


def same_as(path: Tuple[str, ...], what: str) -> Handler:
    """A value that must equal another key of the file (``path``: (section, key), or a derived
    quantity); absent there, it sets it."""
    return described(f"checked: equals {'.'.join(path) if len(path) == 2 else what} ({what}), else refused",
                     lambda value, s, name: s.relations.append((name, value, path, what)))


def noted(why: str) -> Handler:
    """Accepted without effect; the note says ``why``."""
    return described(f"no effect: {why}",
                     lambda value, s, name: s.notes.append(f"{s.where}.{name}: no effect ({why})"))


ignored = described("read as the section's model_id / implied by num_query_groups", lambda value, s, name: None)


def _clip_layers(value: Any, s: Section, name: str) -> None:
    s.set("num_layers", value + 1, name)
    s.set("feature_layer", -2, name)


FUSION = "a kernel choice: msmm picks its kernels per device"
DTYPE = "precision comes from --bf16 / --fp16 (inference: the dtype key)"
PARALLEL = "the parallel layout comes from the launch arguments"
RECOMPUTE = "recomputation comes from the --recompute-* launch arguments (for every section's layers)"
INIT = "initialisation only: the weights come from the checkpoint"
# keys of any section accepted without effect, and why
NO_EFFECT = {
    **{k: DTYPE for k in ("bf16", "fp16", "params_dtype")},
    **{k: FUSION for k in ("bias_activation_fusion", "bias_dropout_fusion", "apply_rope_fusion",
                           "use_fused_rotary_pos_emb", "masked_softmax_fusion", "persist_layer_norm",
                           "memory_efficient_layer_norm", "use_infer_fa", "attention_mask_type")},
    "attention_softmax_in_fp32": "attention runs in fp32 on CPU; Ascend's fused attention keeps its softmax in fp32",
    **{k: PARALLEL for k in ("sequence_parallel", "context_parallel_size", "deallocate_pipeline_outputs",
                             "parallel_output", "use_vit_dp")},
    "use_remove_padding": "unpadded attention kernels: msmm masks padding instead (the same logits)",
    **{k: RECOMPUTE for k in ("recompute_granularity", "recompute_method", "recompute_num_layers")},
    "initializer_factor": INIT,
    "output_hidden_states": "the feature layer is select_layer / the model's own", "use_return_dict": "HF output style",
    "device": "the device comes from MSMM_DEVICE", "tokenizer_type": "the tokenizer comes from data.json / tokenizer",
    "seq_length": "the sequence length comes from --seq-length", "variable_seq_lengths": "--variable-seq-lengths",
}
COMMON = {"freeze": to("freeze"), "pipeline_num_layers": to("pipeline_num_layers"), "ckpt_path": to("ckpt_path"),
          "model_id": ignored}
TEXT_KEYS = {
    **COMMON,
    **{k: to(k) for k in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "num_query_groups",
                          "vocab_size", "layernorm_epsilon", "init_method_std", "attention_dropout", "hidden_dropout",
                          "max_position_embeddings", "rope_scaling", "mrope_section", "add_qkv_bias",
                          "add_bias_linear", "kv_channels")},
    "num_key_value_heads": to("num_query_groups"), "rope_theta": to("rotary_base", float),
    "rotary_base": to("rotary_base", float), "language_vocab_size": to("vocab_size"),
    "language_max_sequence_length": to("max_position_embeddings"),
    "untie_embeddings_and_output_weights": to("tie_word_embeddings", lambda v: not v),
    "disable_bias_linear": to("add_bias_linear", lambda v: not v),
    "normalization": must("RMSNorm", "the text decoders use RMSNorm"),
    "activation_func": must("silu", "the text decoders' MLP is SwiGLU"),
    "gated_linear_unit": must(True, "the text decoders' MLP is SwiGLU"),
    "qk_layernorm": must(False, "the text decoders have no q/k norm"),
    "layernorm_zero_centered_gamma": must(False, "the norms scale by their weight"),
    "apply_query_key_layer_scaling": must(False, "attention scores are scaled by 1/sqrt(head_dim) only"),
    "rotary_percent": must(1.0, "RoPE covers the whole head"),
    "fp16_lm_cross_entropy": must(False, "the loss is computed in fp32"),
    "reset_attention_mask": must(False, "packed rows are given segment ids by the data pipeline"),
    "is_encoder_decoder": must(False, "decoder-only text models"),
    "group_query_attention": ignored,  # num_query_groups says it
    "position_embedding_type": same_as(("position",), "M-RoPE for Qwen2-VL / Qwen2.5-VL, RoPE otherwise"),
    "lm_position_embedding_type": must("rope", "the text decoders use RoPE"),
}
# per msmm vision model_id: (normalization, activation, gated MLP)
VISION_FORM = {"qwen2_vit": ("LayerNorm", "quick_gelu", False), "qwen2_5_vit": ("RMSNorm", "silu", True),
               "clip_vit": ("LayerNorm", "quick_gelu", False)}
QWEN_VIT_KEYS = {
    **COMMON,
    **{k: to(k) for k in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "in_channels",
                          "patch_size", "spatial_merge_size", "temporal_patch_size", "fullatt_block_indexes",
                          "tokens_per_second")},
    "window_attn_size": to("window_size"),
    "normalization": form(0, "normalises with"), "activation_func": form(1, "activates with"),
    "gated_linear_unit": form(2, "gates its MLP:"),
    "intermediate_size": same_as((VISION, "ffn_hidden_size"), "the ViT's MLP width"),
    "llm_hidden_size": noted("MindSpeed-MM's Qwen ViT does not read it; the patch merger's output is the text "
                             "decoder's width"),
    "layernorm_epsilon": must(1e-6, "the Qwen ViT's norms use eps"),
    "post_layer_norm": must(False, "the patch merger normalises the ViT output itself"),
    "hidden_dropout": must(0.0, "the Qwen ViT has no dropout"),
    "attention_dropout": must(0.0, "the Qwen ViT has no dropout"),
    "init_method_std": noted(INIT),
}
INTERN_VIT_KEYS = {
    **COMMON,
    **{k: to(k) for k in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "image_size",
                          "patch_size", "num_channels", "layernorm_epsilon", "normalization", "qk_layernorm",
                          "init_method_std", "attention_dropout", "hidden_dropout")},
    "add_qkv_bias": to("qkv_bias"), "activation_func": to("activation"), "select_layer": to("feature_layer"),
    "post_layer_norm": to("final_layernorm"),
    "q_layernorm": same_as((VISION, "normalization"), "q/k norms are of the ViT's norm type"),
    "k_layernorm": same_as((VISION, "normalization"), "q/k norms are of the ViT's norm type"),
    "drop_path_rate": to("drop_path_rate"),
    "downsample_ratio": same_as((PROJECTOR, "downsample_ratio"), "the projector's pixel shuffle"),
    "ps_version": same_as((PROJECTOR, "ps_version"), "the projector's pixel shuffle"),
    "next_tockens": must(2147483647, "attention is not windowed"),
    "pre_tockens": must(2147483647, "attention is not windowed"),
}
CLIP_KEYS = {
    **COMMON,
    **{k: to(k) for k in ("hidden_size", "num_attention_heads", "ffn_hidden_size", "image_size", "patch_size",
                          "layernorm_epsilon", "attention_dropout", "hidden_dropout")},
    # MindSpeed-MM builds the layers up to the one LLaVA reads; msmm counts CLIP's layers and reads the
    # penultimate: num_layers N (N built) is CLIP's N + 1 layers with feature_layer -2
    "num_layers": described("honoured: CLIP's `num_layers` N + 1 with `feature_layer` -2", _clip_layers),
    "activation_func": to("activation"),
    "normalization": form(0, "normalises with"), "gated_linear_unit": form(2, "gates its MLP:"),
    "add_class_token": must(True, "CLIP has a class token"), "class_token_len": must(1, "CLIP has one class token"),
    "add_bias_linear": must(True, "CLIP's linears have biases"), "add_qkv_bias": must(True, "CLIP's q/k/v have biases"),
    "post_layer_norm": must(False, "LLaVA reads a hidden layer, before CLIP's final norm"),
    "layernorm_zero_centered_gamma": must(False, "the norms scale by their weight"),
    "kv_channels": same_as(("head_dim",), "hidden_size / num_attention_heads"),
    "num_query_groups": same_as((VISION, "num_attention_heads"), "CLIP has no grouped-query attention"),
}
LNMLP_KEYS = {
    **COMMON,
    "num_layers": must(1, "the patch merger is a norm and one MLP"),
    "gated_linear_unit": must(False, "the patch merger's MLP is not gated"),
    "add_bias_linear": must(True, "the patch merger's linears have biases"),
    "activation_func": must("gelu", "the patch merger's MLP uses GELU"),
    "layernorm_epsilon": must(1e-6, "the patch merger's norm uses eps"),
    "input_size": same_as((VISION, "hidden_size"), "the ViT's width"),
    "hidden_size": same_as((TEXT, "hidden_size"), "the text decoder's width"),
    "ffn_hidden_size": same_as(("merged",), "the ViT's width x spatial_merge_size^2"),
    "normalization": same_as(("vision_norm",), "the patch merger's norm is the ViT's"),
}
INTERNVL_MLP_KEYS = {
    **COMMON, "downsample_ratio": to("downsample_ratio"), "ps_version": to("ps_version"),
    "num_layers": must(1, "the projector is LayerNorm and one MLP"),
    "llm_hidden_size": same_as((TEXT, "hidden_size"), "the text decoder's width"),
    "vit_hidden_size": same_as((VISION, "hidden_size"), "the ViT's width"),
}
LLAVA_MLP_KEYS = {
    **COMMON,
    "num_layers": must(2, "LLaVA-1.5's projector is Linear-GELU-Linear"),
    "gated_linear_unit": must(False, "LLaVA-1.5's projector is not gated"),
    "activation_func": must("gelu", "LLaVA-1.5's projector uses GELU"),
    "add_bias_linear": to("bias"),
    "input_size": same_as((VISION, "hidden_size"), "the ViT's width"),
    "hidden_size": same_as((TEXT, "hidden_size"), "the text decoder's width"),
    "ffn_hidden_size": same_as((TEXT, "hidden_size"), "LLaVA-1.5's projector is as wide as the text decoder"),
}
SECTION_KEYS = {"qwen2": TEXT_KEYS, "internlm2": TEXT_KEYS, "llama": TEXT_KEYS, "qwen2_vit": QWEN_VIT_KEYS,
                "qwen2_5_vit": QWEN_VIT_KEYS, "intern_vit": INTERN_VIT_KEYS, "clip_vit": CLIP_KEYS,
                "patch_merger": LNMLP_KEYS, "pixel_shuffle_mlp": INTERNVL_MLP_KEYS, "mlp": LLAVA_MLP_KEYS}
QWEN_TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652}
def is_mindspeed_model_json(data: Any) -> bool:
    """A model.json in MindSpeed-MM's spelling: an upstream section model_id, or LLaVA's text
    decoder without one."""
    if not isinstance(data, dict) or data.get("model_id") not in FAMILIES:
        return False
    encoder = data.get("image_encoder") if isinstance(data.get("image_encoder"), dict) else {}
    sections = [encoder.get("vision_encoder"), encoder.get("vision_projector"), data.get("text_decoder")]
    ids = [s.get("model_id") for s in sections if isinstance(s, dict)]
    return any(i in UPSTREAM_SECTION_IDS for i in ids) or (
        isinstance(data.get("text_decoder"), dict) and "model_id" not in data["text_decoder"])


def _unknown(prefix: str, key: str, known: List[str], allow: bool) -> None:
    """``prefix``: the file and the dotted section, up to the key ("model.json: text_decoder.")."""
    unknown_key(f"{prefix}{key}: unknown key{did_you_mean(key, known)}", allow, MindSpeedModelError)


def _section(family: str, path: str, raw: Any, source: str, notes: List[str], allow_unknown: bool) -> Section:
    if not isinstance(raw, dict):
        raise MindSpeedModelError(f"{source}: {path}: required (an object), got {raw!r}")
    ids = SECTION_IDS[family][path]
    upstream = raw.get("model_id", "")
    if upstream not in ids:
        raise MindSpeedModelError(f"{source}: {path}.model_id: {upstream!r} is not a MindSpeed-MM {family} section "
                                  f"msmm reads (expected one of {sorted(i for i in ids if i)})")
    s = Section(f"{source}: {path}", path, ids[upstream], notes)
    s.out["model_id"] = s.model_id
    table = SECTION_KEYS[s.model_id]
    for key, value in raw.items():
        if key in table:
            table[key](value, s, key)
        elif key in NO_EFFECT:
            notes.append(f"{s.where}.{key}: no effect ({NO_EFFECT[key]})")
        else:
            _unknown(f"{s.where}.", key, sorted(table) + sorted(NO_EFFECT), allow_unknown)
    return s


def _derived(quantity: str, sections: Mapping[str, Section], family: str) -> Any:
    vision = sections[VISION].out
    if quantity == "head_dim":
        return vision["hidden_size"] // vision["num_attention_heads"]
    if quantity == "merged":
        return vision["hidden_size"] * vision.get("spatial_merge_size", 2) ** 2
    if quantity == "vision_norm":
        return VISION_FORM[sections[VISION].model_id][0]
    return "mrope" if family in ("qwen2_vl", "qwen2_5_vl") else "rope"  # position


def _resolve(sections: Mapping[str, Section], top: Section, family: str) -> None:
    """Every ``same_as`` key equals its other key (or sets it where that is absent)."""
    for s in (top, *sections.values()):
        for name, value, path, what in s.relations:
            if len(path) == 2:
                target = sections[path[0]].out
                if path[1] not in target:
                    target[path[1]] = value
                    continue
                expected, other = target[path[1]], f"{path[0]}.{path[1]}"
            else:
                expected, other = _derived(path[0], sections, family), what
            if value != expected:
                s.fail(name, f"{value!r} differs from {other} ({expected!r}): {what}")


# InternVL's top-level keys: onto a section, checked, or without effect
INTERNVL_TOP = {
    "select_layer": same_as((VISION, "feature_layer"), "the ViT layer the projector reads"),
    "downsample_ratio": same_as((PROJECTOR, "downsample_ratio"), "the projector's pixel shuffle"),
    "ps_version": same_as((PROJECTOR, "ps_version"), "the projector's pixel shuffle"),
    "pre_process": must(True, "the model is built whole (pipeline stages place its layers)"),
    "post_process": must(True, "the model is built whole (pipeline stages place its layers)"),
    "add_text_encoder": must(False, "InternVL has no text encoder"),
    "add_rmsnorm_offset": must(False, "the norms scale by their weight"),
    "img_embedding_idx": must(1, "image features replace the <IMG_CONTEXT> tokens"),
}


def _top_level(data: Mapping[str, Any], family: str, top: Section, allow_unknown: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {"model_id": family}
    extra = INTERNVL_TOP if family == "internvl" else {}
    for key, value in data.items():
        if key in ("model_id", "image_encoder", "text_decoder"):
            continue
        if key in ("img_context_token_id", "image_token_id"):
            if out.get("image_token_id", value) != value:
                top.fail(key, f"{value} contradicts image_token_id {out['image_token_id']}")
            out["image_token_id"] = value
        elif key in ("video_token_id", "vision_start_token_id") and family in ("qwen2_vl", "qwen2_5_vl"):
            out[key] = value
        elif key in ("text_encoder", "video_encoder"):
            if value is not None:
                top.fail(key, f"must be null (msmm's {family} has no {key} section)")
        elif key == "patch":
            top.notes.append(f"{top.where}: patch: no effect (switches of MindSpeed-MM's code patches)")
        elif key in extra:
            extra[key](value, top, key)
        else:
            _unknown(f"{top.where}: ", key, ["img_context_token_id", "image_token_id", "video_token_id",
                                             "vision_start_token_id", "text_encoder", "video_encoder", "patch", *extra],
                     allow_unknown)
    return out


def from_mindspeed(data: Mapping[str, Any], source: str = "model.json",
                   allow_unknown_keys: bool = False) -> Tuple[Dict[str, Any], List[str]]:
    """(msmm's model.json, notes: the keys accepted without effect and the defaults filled) of
    a MindSpeed-MM model.json ``data`` (``is_mindspeed_model_json``); an unknown key is an error,
    or with ``allow_unknown_keys`` a warning."""
    family, notes = FAMILIES[data["model_id"]], []
    top = Section(source, "", "", notes)
    out = _top_level(data, family, top, allow_unknown_keys)
    encoder = data.get("image_encoder")
    if not isinstance(encoder, dict):
        raise MindSpeedModelError(f"{source}: image_encoder: required (an object with vision_encoder and "
                                  "vision_projector)")
    for key in encoder:
        if key not in ("vision_encoder", "vision_projector"):
            _unknown(f"{source}: image_encoder.", key, ["vision_encoder", "vision_projector"], allow_unknown_keys)
    raws = {VISION: encoder.get("vision_encoder"), PROJECTOR: encoder.get("vision_projector"),
            TEXT: data.get("text_decoder")}
    sections = {path: _section(family, path, raw, source, notes, allow_unknown_keys) for path, raw in raws.items()}
    _resolve(sections, top, family)
    text = sections[TEXT].out
    if family in ("qwen2_vl", "qwen2_5_vl"):
        for key, default in QWEN_TOKEN_IDS.items():
            if key not in out:
                out[key] = default
                notes.append(f"{source}: {key}: not given, Qwen2-VL's tokenizer's {default}")
    elif family == "llava" and "image_token_id" not in out:
        # MindSpeed-MM marks images with -200 in input_ids; msmm embeds an <image> token, the id after
        # Vicuna's vocabulary (what the tokenizer and the text checkpoint's added row get)
        out["image_token_id"] = text["vocab_size"]
        text["vocab_size"] += 1
        notes.append(f"{source}: image_token_id: not given; <image> is token {out['image_token_id']}, one row added to "
                     f"text_decoder.vocab_size ({text['vocab_size']}), as HF's LLaVA-1.5 does")
    out["image_encoder"] = {"vision_encoder": sections[VISION].out, "vision_projector": sections[PROJECTOR].out}
    out[TEXT] = text
    return out, notes
