"""MindSpeed-MM's own model.json spelling (its section model_ids and Megatron keys), written here
from the facts of upstream's published files for each family and size, builds the same model as
msmm's example model.json of that size (whose parameter counts test_real_size_configs checks
against the published sizes); keys without effect are logged with the reason, keys msmm cannot
honour are refused naming the file and key."""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest
import torch

from msmm.models import ModelConfigError, build_model, load_model_config
from msmm.models.model_config import parse_model_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# msmm family -> (upstream model_id, vision model_id, projector model_id, text model_id by msmm's)
UPSTREAM_IDS = {
    "qwen2_vl": ("qwen2vl", "qwen2vit", "lnmlp", {"qwen2": "qwen2lm"}),
    "qwen2_5_vl": ("qwen2_5vl", "qwen2vit", "lnmlp", {"qwen2": "qwen2_5_lm"}),
    "internvl": ("InternVL", "InternViT", "InternVLMLP", {"internlm2": "internllm", "qwen2": "Qwen2.5llm"}),
}
# keys MindSpeed-MM's files carry that change nothing here (kernel fusions, dtype and parallel switches)
NO_EFFECT = {"bf16": True, "fp16": False, "params_dtype": "bf16", "use_fused_rotary_pos_emb": True,
             "attention_softmax_in_fp32": True, "sequence_parallel": False, "bias_activation_fusion": True}


def upstream_text(text: dict, family: str) -> dict:
    out = {"model_id": UPSTREAM_IDS[family][3][text["model_id"]], **NO_EFFECT,
           "normalization": "RMSNorm", "activation_func": "silu", "gated_linear_unit": True,
           "untie_embeddings_and_output_weights": True, "disable_bias_linear": True, "group_query_attention": True,
           "position_embedding_type": "mrope" if "mrope_section" in text else "rope"}
    for key, value in text.items():
        if key == "rotary_base":
            out["rope_theta" if family != "internvl" else "rotary_base"] = value
        elif key != "model_id":
            out[key] = value
    return out


def upstream_vision(vision: dict, family: str) -> dict:
    out = {"model_id": UPSTREAM_IDS[family][1], **NO_EFFECT}
    renames = {"window_size": "window_attn_size", "qkv_bias": "add_qkv_bias", "feature_layer": "select_layer",
               "activation": "activation_func"}
    for key, value in vision.items():
        if key != "model_id":
            out[renames.get(key, key)] = value
    if family == "internvl":
        out.update(drop_path_rate=0.0, pre_tockens=2147483647, next_tockens=2147483647, activation_func="gelu")
    else:
        qwen2_5 = family == "qwen2_5_vl"
        out.update(normalization="RMSNorm" if qwen2_5 else "LayerNorm",
                   activation_func="silu" if qwen2_5 else "quick_gelu", layernorm_epsilon=1e-6, in_channels=3,
                   spatial_merge_size=2, temporal_patch_size=2, post_layer_norm=False, llm_hidden_size=1280)
        if qwen2_5:
            out.update(gated_linear_unit=True, intermediate_size=vision["ffn_hidden_size"])
    return out


def upstream_model_json(msmm: dict) -> dict:
    """MindSpeed-MM's spelling of msmm's model.json ``msmm``."""
    family = msmm["model_id"]
    vision, projector = msmm["image_encoder"]["vision_encoder"], msmm["image_encoder"]["vision_projector"]
    text = msmm["text_decoder"]
    out = {"model_id": UPSTREAM_IDS[family][0], "img_context_token_id": msmm["image_token_id"],
           "text_encoder": None, "video_encoder": None, "patch": {"bridge_patch": False}}
    if family == "internvl":
        proj = {"model_id": "InternVLMLP", "downsample_ratio": projector["downsample_ratio"], "num_layers": 1,
                "vit_hidden_size": vision["hidden_size"], "llm_hidden_size": text["hidden_size"],
                "params_dtype": "bf16", "freeze": projector["freeze"]}
        out.update(select_layer=-1, ps_version=projector["ps_version"], downsample_ratio=projector["downsample_ratio"],
                   pre_process=True, post_process=True, add_text_encoder=False, img_embedding_idx=1,
                   add_rmsnorm_offset=False)
    else:
        out.update(vision_start_token_id=msmm["vision_start_token_id"])
        proj = {"model_id": "lnmlp", "num_layers": 1, "gated_linear_unit": False, "add_bias_linear": True,
                "input_size": vision["hidden_size"], "hidden_size": text["hidden_size"],
                "ffn_hidden_size": 4 * vision["hidden_size"], "activation_func": "gelu", "layernorm_epsilon": 1e-6,
                "normalization": "RMSNorm" if family == "qwen2_5_vl" else "LayerNorm", "freeze": projector["freeze"],
                **NO_EFFECT}
    out["image_encoder"] = {"vision_encoder": upstream_vision(vision, family), "vision_projector": proj}
    out["text_decoder"] = upstream_text(text, family)
    return out


def _architecture(model) -> dict:
    skip = {"init_method_std"}
    return {part: {k: v for k, v in dataclasses.asdict(getattr(model.config, part)).items() if k not in skip}
            for part in ("vision", "text")}


@pytest.mark.parametrize("name", ["qwen2vl/model_7b.json", "qwen2vl/model_72b.json", "qwen2.5vl/model_7b.json",
                                  "qwen2.5vl/model_72b.json", "internvl2/model_2B.json", "internvl2/model_8B.json",
                                  "internvl3/model_8B.json", "internvl3/model_78B.json"])
def test_upstream_spelling_builds_the_same_model(name, caplog):
    path = os.path.join(ROOT, "examples", name)
    with open(path) as f:
        msmm = json.load(f)
    with caplog.at_level(logging.INFO, logger="msmm.config"):
        upstream = parse_model_config(upstream_model_json(msmm), f"upstream/{name}")
    with torch.device("meta"):
        ours, theirs = build_model(load_model_config(path)), build_model(upstream)
    assert _architecture(theirs) == _architecture(ours)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    assert {k: s.freeze for k, s in upstream.sections.items()} == \
        {k: s.freeze for k, s in load_model_config(path).sections.items()}
    assert f"upstream/{name}: text_decoder.bf16: no effect (precision comes from --bf16 / --fp16" in caplog.text
    assert "text_decoder.use_fused_rotary_pos_emb: no effect (a kernel choice" in caplog.text


def test_llava_upstream_clip_layers_and_image_token():
    """MindSpeed-MM builds CLIP's 23 layers LLaVA reads and marks images with -200: msmm reads
    CLIP's 24 layers at the penultimate one and adds <image> after Vicuna's 32000 tokens."""
    raw = {"model_id": "llava",
           "text_decoder": {"num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_query_groups": 32,
                            "ffn_hidden_size": 11008, "add_bias_linear": False, "gated_linear_unit": True,
                            "normalization": "RMSNorm", "activation_func": "silu", "language_vocab_size": 32000,
                            "max_position_embeddings": 4096, "language_max_sequence_length": 4096,
                            "lm_position_embedding_type": "rope", "layernorm_epsilon": 1e-5, "freeze": True,
                            "ckpt_path": "vicuna-7b-v1.5"},
           "image_encoder": {
               "vision_encoder": {"model_id": "clip", "num_layers": 23, "hidden_size": 1024, "num_attention_heads": 16,
                                  "num_query_groups": 16, "ffn_hidden_size": 4096, "kv_channels": 64,
                                  "add_class_token": True, "class_token_len": 1, "patch_size": 14, "image_size": 336,
                                  "activation_func": "quick_gelu", "normalization": "LayerNorm", "freeze": True,
                                  "ckpt_path": "ViT-L-14-336px.pt"},
               "vision_projector": {"model_id": "mlp", "num_layers": 2, "input_size": 1024, "hidden_size": 4096,
                                    "ffn_hidden_size": 4096, "activation_func": "gelu", "add_bias_linear": True,
                                    "freeze": False, "ckpt_path": None}},
           "text_encoder": None, "video_encoder": None}
    config = parse_model_config(raw, "model.json")
    vision, text = config.sections["image_encoder.vision_encoder"], config.sections["text_decoder"]
    assert (vision.config["num_layers"], vision.config["feature_layer"]) == (24, -2)
    assert config.options["image_token_id"] == 32000 and text.config["vocab_size"] == 32001
    assert (vision.ckpt_path, text.ckpt_path) == ("ViT-L-14-336px.pt", "vicuna-7b-v1.5")
    with torch.device("meta"):
        model = build_model(config)
    assert len(model.vision_tower.encoder.layers) == 23


def _qwen_upstream() -> dict:
    with open(os.path.join(ROOT, "examples", "qwen2vl", "model_7b.json")) as f:
        return upstream_model_json(json.load(f))


@pytest.mark.parametrize("where, key, value, message", [
    ("text_decoder", "normalization", "LayerNorm", "text_decoder.normalization: 'LayerNorm' is not supported: the "
                                                   "text decoders use RMSNorm"),
    ("text_decoder", "activation_func", "gelu", "text_decoder.activation_func: 'gelu' is not supported"),
    ("text_decoder", "rotary_percent", 0.5, "text_decoder.rotary_percent: 0.5 is not supported: RoPE covers the whole"),
    ("text_decoder", "position_embedding_type", "rope", "text_decoder.position_embedding_type: 'rope' differs from "
                                                        "M-RoPE for Qwen2-VL"),
    ("text_decoder", "num_layer", 28, "text_decoder.num_layer: unknown key \\(did you mean 'num_layers'\\?\\)"),
    ("image_encoder.vision_encoder", "activation_func", "silu",
     "vision_encoder.activation_func: 'silu' is not supported: qwen2_vit activates with \\('quick_gelu'\\)"),
    ("image_encoder.vision_projector", "input_size", 1024, "vision_projector.input_size: 1024 differs from "
                                                           "image_encoder.vision_encoder.hidden_size \\(1280\\)"),
    ("image_encoder.vision_projector", "model_id", "mlp", "vision_projector.model_id: 'mlp' is not a MindSpeed-MM "
                                                          "qwen2_vl section"),
])
def test_keys_msmm_cannot_honour_are_refused(where, key, value, message):
    raw = _qwen_upstream()
    node = raw
    for part in where.split("."):
        node = node[part]
    node[key] = value
    with pytest.raises(ModelConfigError, match=f"model.json: .*{message}"):
        parse_model_config(raw, "model.json")


def test_internvit_stochastic_depth_is_honoured():
    """InternVL3-78B's ``drop_path_rate`` 0.4 reaches the ViT: layer i drops with rate 0.4 * i / 44."""
    with open(os.path.join(ROOT, "examples", "internvl3", "model_78B.json")) as f:
        raw = upstream_model_json(json.load(f))
    raw["image_encoder"]["vision_encoder"]["drop_path_rate"] = 0.4
    config = parse_model_config(raw, "model_78B.json")
    assert config.sections["image_encoder.vision_encoder"].config["drop_path_rate"] == 0.4
    with torch.device("meta"):
        model = build_model(config)
    layers = model.vision_tower.encoder.layer
    assert (layers[0].drop_path1.rate, layers[-1].drop_path2.rate) == (0.0, pytest.approx(0.4 * (len(layers) - 1) / 44))


def test_allow_unknown_keys_turns_model_json_typos_into_warnings(caplog):
    """``msmm-train --allow-unknown-keys``: a mistyped model.json key (either spelling) warns
    with the did-you-mean and is ignored, instead of stopping the run."""
    with open(os.path.join(ROOT, "examples", "qwen2vl", "model_7b.json")) as f:
        ours = json.load(f)
    ours["text_decoder"]["num_layer"] = 28
    upstream = _qwen_upstream()
    upstream["image_encoder"]["vision_encoder"]["hidden_sise"] = 1280
    for raw, key, close in ((ours, "text_decoder.num_layer", "num_layers"),
                            (upstream, "vision_encoder.hidden_sise", "hidden_size")):
        with pytest.raises(ModelConfigError, match=f"{key}: unknown key"):
            parse_model_config(raw, "model.json")
        with caplog.at_level(logging.WARNING, logger="msmm.config"):
            parse_model_config(raw, "model.json", allow_unknown_keys=True)
        assert f"{key}: unknown key (did you mean '{close}'?); ignored (--allow-unknown-keys)" in caplog.text
