"""The real-size ``model*.json`` / ``data*.json`` next to the launch scripts.

Each model.json is checked three ways, without weights (the model is built on torch's
``meta`` device, shapes only):

1. it builds through ``model_config``'s validation;
2. its vision / text dataclasses equal the ones our HF readers (``internvl_config_from_hf``,
   ``llava_config_from_hf``) make from the upstream architecture numbers in ``UPSTREAM``
   below (written in each checkpoint's ``config.json`` spelling, with where each came from),
   and it passes the check ``--load`` makes against the checkpoint's ``config.json``;
3. its parameter count is within 2% of the published size.

Each launch script is run by bash with ``msrun`` replaced by a function that records its
arguments; those must parse as ``msmm-train`` arguments, and the model.json / data.json they
name must exist and validate.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess

import pytest
import torch

from msmm.config.data_config import load_data_config
from msmm.config.train_args import parse_train_args
from msmm.models.internvl import internvl_config_from_hf
from msmm.models.llava import llava_config_from_hf
from msmm.models import ModelConfigError, build_model, load_model_config
from msmm.models.pretrained import check_checkpoint_numbers, check_text_decoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# InternViT-300M-448px (InternVL2-2B/8B; -V2_5 for InternVL3-8B): remote-code vision_config.
# Source: the InternVL2-8B config.json quoted in full in public code (vision_config block),
# and Ascend/MindSpeed-MM examples/internvl2/model_2B.json, model_8B.json,
# examples/internvl3/inference_8B.json (vision_encoder sections: same numbers).
VIT_300M = {"hidden_size": 1024, "image_size": 448, "intermediate_size": 4096, "layer_norm_eps": 1e-06,
            "norm_type": "layer_norm", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24,
            "patch_size": 14, "qk_normalization": False, "qkv_bias": True, "hidden_act": "gelu",
            "drop_path_rate": 0.0}
# InternViT-6B-448px-V2_5 (InternVL3-78B). Source: Ascend/MindSpeed-MM
# examples/internvl3/model_78B.json vision_encoder (45 x 3200, 25 heads, 12800, RMSNorm,
# QK-norm, no qkv bias), the same as the InternViT-6B block of the InternVL2-26B config.json
# quoted in public code. drop_path_rate (0.4 in MindSpeed-MM's file) adds no parameters.
VIT_6B = {"hidden_size": 3200, "image_size": 448, "intermediate_size": 12800, "layer_norm_eps": 1e-06,
          "norm_type": "rms_norm", "num_attention_heads": 25, "num_channels": 3, "num_hidden_layers": 45,
          "patch_size": 14, "qk_normalization": True, "qkv_bias": False, "hidden_act": "gelu"}

UPSTREAM = {
    # InternVL2-2B = InternViT-300M + internlm2-chat-1_8b (model card). LLM numbers: Ascend/MindSpeed-MM
    # examples/internvl2/model_2B.json text_decoder (24 x 2048, 16 heads, 8 groups, 8192, vocab 92553,
    # eps 1e-5). rope_theta: not found in a stored copy of the config.json; see docs/training.md.
    "internvl2/model_2B.json": (
        {"llm_config": {"model_type": "internlm2", "num_hidden_layers": 24, "hidden_size": 2048,
                        "num_attention_heads": 16, "num_key_value_heads": 8, "intermediate_size": 8192,
                        "vocab_size": 92553, "rms_norm_eps": 1e-05, "rope_theta": 1000000, "bias": False},
         "vision_config": VIT_300M, "select_layer": -1, "ps_version": "v2", "downsample_ratio": 0.5},
        92546, 2.2e9),  # <IMG_CONTEXT> id: MindSpeed-MM model_2B.json img_context_token_id; 2.2B: model card
    # InternVL2-8B = InternViT-300M + internlm2_5-7b-chat. Source: the InternVL2-8B config.json quoted in
    # full in public code (llm_config: 32 x 4096, 32 heads, 8 kv heads, 14336, vocab 92553, eps 1e-5,
    # rope_theta 1e6, max_position_embeddings 32768, rope_scaling dynamic x2), = MindSpeed-MM model_8B.json.
    "internvl2/model_8B.json": (
        {"llm_config": {"model_type": "internlm2", "num_hidden_layers": 32, "hidden_size": 4096,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                        "vocab_size": 92553, "rms_norm_eps": 1e-05, "rope_theta": 1000000, "bias": False,
                        "max_position_embeddings": 32768, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
         "vision_config": VIT_300M, "select_layer": -1, "ps_version": "v2", "downsample_ratio": 0.5},
        92546, 8.1e9),  # 8.1B: model card
    # InternVL3-8B = InternViT-300M-448px-V2_5 + Qwen2.5-7B. Source: Ascend/MindSpeed-MM
    # examples/internvl3/inference_8B.json (28 x 3584, 28 heads, 4 groups, 18944, vocab 151674,
    # eps 1e-6, rotary_base 1e6, qkv bias, img_context_token_id 151667).
    "internvl3/model_8B.json": (
        {"llm_config": {"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
                        "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
                        "vocab_size": 151674, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0},
         "vision_config": VIT_300M, "select_layer": -1, "ps_version": "v2", "downsample_ratio": 0.5},
        151667, 8.0e9),  # nominal size in the name
    # InternVL3-78B = InternViT-6B-448px-V2_5 + Qwen2.5-72B. Source: Ascend/MindSpeed-MM
    # examples/internvl3/model_78B.json (80 x 8192, 64 heads, 8 groups, 29568, vocab 151674, eps 1e-6,
    # rotary_base 1e6, qkv bias, img_context_token_id 151667).
    "internvl3/model_78B.json": (
        {"llm_config": {"model_type": "qwen2", "num_hidden_layers": 80, "hidden_size": 8192,
                        "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 29568,
                        "vocab_size": 151674, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0},
         "vision_config": VIT_6B, "select_layer": -1, "ps_version": "v2", "downsample_ratio": 0.5},
        151667, 78.0e9),  # nominal size in the name
    # llava-hf/llava-1.5-7b-hf config.json (quoted in public code, several identical copies): text_config
    # gives only model_type llama, vocab_size 32064, rms_norm_eps 1e-5, max_position_embeddings 4096 and
    # relies on LlamaConfig's defaults (32 x 4096, 32 heads, 11008, rope_theta 10000), written out here;
    # vision_config CLIP ViT-L/14-336 (24 x 1024, 16 heads, 4096, 336 px, patch 14); image_token_index
    # 32000; vision_feature_layer -2 / select strategy "default" are LlavaConfig's defaults.
    "llava1.5/model.json": (
        {"text_config": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
                         "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                         "vocab_size": 32064, "rms_norm_eps": 1e-05, "rope_theta": 10000.0},
         "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                           "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                           "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05},
         "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
         "projector_hidden_act": "gelu"},
        32000, 7.0e9),  # nominal size in the name
}

# Fields that only matter for random initialisation / dropout, not the architecture.
NOT_ARCHITECTURE = {"init_method_std", "attention_dropout", "hidden_dropout", "pad_token_id"}

LAUNCH_SCRIPTS = [
    "internvl2/finetune_internvl2_2B.sh",
    "internvl2/finetune_internvl2_8B.sh",
    "internvl2/finetune_internvl2_lora_2B.sh",
    "internvl3/finetune_internvl3_8B.sh",
    "internvl3/finetune_internvl3_78B.sh",
    "llava1.5/pretrain_llava1_5.sh",
    "qwen2vl/finetune_qwen2vl_7b.sh",
]


def _architecture(config) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_ARCHITECTURE}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_model_json_matches_upstream_and_published_size(name):
    hf, image_token_id, published = UPSTREAM[name]
    config = load_model_config(os.path.join(ROOT, "examples", name))
    with torch.device("meta"):
        model = build_model(config)
    if config.model_id == "internvl":
        reference, _ = internvl_config_from_hf(hf, image_token_id=image_token_id, where=name)
    else:
        reference = llava_config_from_hf(hf, where=name)
    ours = model.config
    assert ours.text_family == reference.text_family
    assert ours.image_token_id == reference.image_token_id == image_token_id
    assert _architecture(ours.vision) == _architecture(reference.vision)
    assert _architecture(ours.text) == _architecture(reference.text)
    if config.model_id == "internvl":
        assert (ours.downsample_ratio, ours.ps_version) == (reference.downsample_ratio, reference.ps_version)
    else:
        assert (ours.select_strategy, ours.projector_bias) == (reference.select_strategy, reference.projector_bias)
    check_checkpoint_numbers(config, hf, name)  # what --load of the checkpoint checks
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - published) / published < 0.02, f"{name}: {count / 1e9:.3f}B parameters vs {published / 1e9}B"


# Qwen2-VL / Qwen2.5-VL config.json numbers (top-level text keys, vision_config in HF spelling) and
# what their size was published as. Sources: the Qwen2-VL-72B-Instruct config.json (copies on the HF
# hub, e.g. OPEA/Qwen2-VL-72B-Instruct-int4-sym-inc: 80 x 8192, 64 heads / 8 kv, 29568, vocab 152064,
# rope 1e6, eps 1e-6, mrope [16, 24, 24]; its vision_config is Qwen2VLVisionConfig's defaults but
# hidden_size 8192 = the LLM width), = MindSpeed-MM examples/qwen2vl/model_72b.json; Qwen/Qwen2.5-VL-
# 72B-Instruct-AWQ config.json (vision_config: intermediate_size 3456, out_hidden_size 8192,
# tokens_per_second 2; its text intermediate_size 29696 is the AWQ padding of 29568, which MindSpeed-MM
# examples/qwen2.5vl/model_72b.json and Qwen2.5-72B have); Qwen/Qwen2.5-VL-7B-Instruct-AWQ config.json
# (28 x 3584, 28 / 4, 18944, vocab 152064; vision_config hidden 1280, tokens_per_second 2, the rest
# Qwen2_5_VLVisionConfig's defaults: depth 32, 16 heads, intermediate 3420, window 112, full attention
# in blocks 7/15/23/31), = MindSpeed-MM examples/qwen2.5vl/model_7b.json.
_QWEN_TEXT_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
                 "num_key_value_heads": 4, "vocab_size": 152064}
_QWEN_TEXT_72B = {"hidden_size": 8192, "intermediate_size": 29568, "num_attention_heads": 64, "num_hidden_layers": 80,
                  "num_key_value_heads": 8, "vocab_size": 152064}
_QWEN_COMMON = {"rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": False,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "image_token_id": 151655,
                "video_token_id": 151656, "vision_start_token_id": 151652}
_QWEN25_VISION = {"depth": 32, "hidden_size": 1280, "num_heads": 16, "patch_size": 14, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
                  "tokens_per_second": 2}
QWEN_UPSTREAM = {
    # published: the text model is Qwen2-72B's, listed with "params": 72.706 (billions) by the Open LLM
    # Leaderboard (open-llm-leaderboard/requests Qwen/Qwen2-72B-Instruct): checked to the 3 decimals given
    "qwen2vl/model_72b.json": (
        dict(_QWEN_COMMON, model_type="qwen2_vl", **_QWEN_TEXT_72B,
             vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 8192, "mlp_ratio": 4, "num_heads": 16,
                            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}),
        ("text", 72.706e9, 0.0005e9)),
    # published: "73B" on its HF hub listing (rounded to whole billions)
    "qwen2.5vl/model_72b.json": (
        dict(_QWEN_COMMON, model_type="qwen2_5_vl", **_QWEN_TEXT_72B,
             vision_config=dict(_QWEN25_VISION, intermediate_size=3456, out_hidden_size=8192)),
        ("total", 73e9, 0.5e9)),
    # published: "8B" on the HF hub listing of a Qwen2.5-VL-7B-Instruct copy (rounded to whole billions)
    "qwen2.5vl/model_7b.json": (
        dict(_QWEN_COMMON, model_type="qwen2_5_vl", **_QWEN_TEXT_7B,
             vision_config=dict(_QWEN25_VISION, intermediate_size=3420, out_hidden_size=3584)),
        ("total", 8e9, 0.5e9)),
}


@pytest.mark.parametrize("name", sorted(QWEN_UPSTREAM))
def test_qwen_model_json_matches_upstream_and_published_size(name):
    from msmm.models.qwen2_vl import Qwen2VLConfig

    hf, (part, published, tolerance) = QWEN_UPSTREAM[name]
    config = load_model_config(os.path.join(ROOT, "examples", name))
    with torch.device("meta"):
        model = build_model(config)
    reference = Qwen2VLConfig.from_hf(hf)
    assert _architecture(model.config.vision) == _architecture(reference.vision)
    assert _architecture(model.config.text) == _architecture(reference.text)
    assert (model.config.image_token_id, model.config.video_token_id, model.config.vision_start_token_id) == \
        (reference.image_token_id, reference.video_token_id, reference.vision_start_token_id)
    check_checkpoint_numbers(config, hf, name)  # what --load of the checkpoint checks
    if part == "text":
        counted = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual."))
    else:
        counted = sum(p.numel() for p in model.parameters())
    assert abs(counted - published) <= tolerance, f"{name}: {part} {counted / 1e9:.3f}B vs {published / 1e9}B"


def test_text_decoder_checked_against_top_level_qwen2_vl_config():
    """Qwen2-VL / Qwen2.5-VL config.json keep the text numbers at the top level (no text_config)."""
    config = load_model_config(os.path.join(ROOT, "examples", "qwen2vl", "model_7b.json"))
    hf = {"model_type": "qwen2_vl", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
          "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
          "vocab_size": 152064, "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584}}
    check_text_decoder(config, hf, "Qwen2-VL-7B-Instruct/config.json")
    with pytest.raises(ModelConfigError, match=r"text_decoder.rotary_base is 1000000.0, but "
                                               r"Qwen2-VL-7B-Instruct/config.json has rope_theta = 10000.0"):
        check_text_decoder(config, dict(hf, rope_theta=10000.0), "Qwen2-VL-7B-Instruct/config.json")


def test_rope_scaling_checked_against_the_checkpoint():
    """InternVL2-8B's InternLM2 scales RoPE (dynamic x2 past 32768): a model.json without it,
    or with another factor, is not the checkpoint's model."""
    hf = UPSTREAM["internvl2/model_8B.json"][0]
    config = load_model_config(os.path.join(ROOT, "examples", "internvl2", "model_8B.json"))
    check_text_decoder(config, hf, "InternVL2-8B/config.json")
    text = config.sections["text_decoder"].config
    text["rope_scaling"] = {"type": "dynamic", "factor": 4.0}
    with pytest.raises(ModelConfigError, match=r"text_decoder.rope_scaling is \{'type': 'dynamic', 'factor': 4.0\} "
                                               r"\(max_position_embeddings 32768\), but InternVL2-8B/config.json has "
                                               r"llm_config.rope_scaling = \{'type': 'dynamic', 'factor': 2.0\}"):
        check_text_decoder(config, hf, "InternVL2-8B/config.json")
    del text["rope_scaling"]
    with pytest.raises(ModelConfigError, match=r"text_decoder.rope_scaling is None"):
        check_text_decoder(config, hf, "InternVL2-8B/config.json")


@pytest.mark.parametrize("name, key, value, message", [
    ("internvl2/model_8B.json", "num_attention_heads", 8, "num_attention_heads is 16, but {where} has "
                                                          "vision_config.num_attention_heads = 8"),
    ("internvl2/model_8B.json", "layer_norm_eps", 1e-5, "layernorm_epsilon is 1e-06, but {where} has "
                                                        "vision_config.layer_norm_eps = 1e-05"),
    ("llava1.5/model.json", "layer_norm_eps", 1e-6, "layernorm_epsilon is 1e-05, but {where} has "
                                                    "vision_config.layer_norm_eps = 1e-06"),
])
def test_vision_numbers_checked_against_the_checkpoint(name, key, value, message):
    """Head count and norm epsilon change no shape: --load compares them with vision_config."""
    hf = UPSTREAM[name][0]
    config = load_model_config(os.path.join(ROOT, "examples", name))
    check_checkpoint_numbers(config, hf, "ckpt/config.json")
    bad = dict(hf, vision_config=dict(hf["vision_config"], **{key: value}))
    with pytest.raises(ModelConfigError,
                       match="image_encoder.vision_encoder." + message.format(where="ckpt/config.json")):
        check_checkpoint_numbers(config, bad, "ckpt/config.json")


def test_qwen2_5_vl_window_checked_against_the_checkpoint():
    config = load_model_config(os.path.join(ROOT, "examples", "qwen2.5vl", "model_7b.json"))
    hf = {"model_type": "qwen2_5_vl", "vision_config": {"num_heads": 16, "window_size": 112, "tokens_per_second": 2,
                                                        "fullatt_block_indexes": [7, 15, 23, 31]}}
    check_checkpoint_numbers(config, hf, "ckpt/config.json")
    with pytest.raises(ModelConfigError, match=r"fullatt_block_indexes is \(7, 15, 23, 31\), but ckpt/config.json has "
                                               r"vision_config.fullatt_block_indexes = \[7, 15, 23\]"):
        bad = dict(hf["vision_config"], fullatt_block_indexes=[7, 15, 23])
        check_checkpoint_numbers(config, dict(hf, vision_config=bad), "ckpt/config.json")


@pytest.mark.parametrize("script", LAUNCH_SCRIPTS)
def test_launch_script_arguments_and_configs_validate(script, tmp_path, caplog):
    record = tmp_path / "argv"
    shell = f'msrun() {{ printf "%s\\n" "$@" > {shlex.quote(str(record))}; }}; export -f msrun; ' \
            f'bash {shlex.quote(os.path.join(ROOT, "examples", script))}'
    subprocess.run(["bash", "-c", shell], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    argv = record.read_text().splitlines()
    argv = argv[argv.index("msmm/train/cli.py") + 1:]
    args = parse_train_args(argv)
    for path in (args.mm_model, args.mm_data):
        assert os.path.isfile(os.path.join(ROOT, path)), f"{script}: {path} is not shipped"
    load_model_config(os.path.join(ROOT, args.mm_model))
    with caplog.at_level("WARNING", logger="msmm.config"):
        load_data_config(os.path.join(ROOT, args.mm_data))
    assert not caplog.records, f"{args.mm_data}: {[r.getMessage() for r in caplog.records]}"
