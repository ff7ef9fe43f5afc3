"""model.json for InternVL and LLaVA-1.5: the built model has HF's architecture (the HF
checkpoint loads strictly and gives HF's logits), ``freeze`` switches gradients off per
section, and bad input is an error naming the key."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import test_internvl
import test_llava
from msmm.models import ModelConfigError, build_model, load_model_config, load_pretrained, parse_model_config

TEXT = {"num_layers": 2, "hidden_size": 48, "num_attention_heads": 4, "num_query_groups": 2, "ffn_hidden_size": 96,
        "vocab_size": 128, "rotary_base": 10000.0}

INTERNVL_JSON = {
    "model_id": "internvl",
    "image_token_id": test_internvl.IMG,
    "image_encoder": {
        "vision_encoder": {"model_id": "intern_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                           "ffn_hidden_size": 64, "image_size": test_internvl.TILE, "patch_size": 7, "freeze": True},
        "vision_projector": {"model_id": "pixel_shuffle_mlp", "downsample_ratio": 0.5, "ps_version": "v2"},
    },
    "text_decoder": {"model_id": "qwen2", **TEXT, "add_qkv_bias": True, "freeze": False},
}

LLAVA_JSON = {
    "model_id": "llava",
    "image_token_id": test_llava.IMAGE,
    "image_encoder": {
        "vision_encoder": {"model_id": "clip_vit", "num_layers": 3, "hidden_size": 32, "num_attention_heads": 4,
                           "ffn_hidden_size": 64, "image_size": test_llava.SIZE, "patch_size": 7, "freeze": True},
        "vision_projector": {"model_id": "mlp", "freeze": False},
    },
    "text_decoder": {"model_id": "llama", **TEXT, "freeze": True},
}


def write(tmp_path, data: dict) -> str:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    return str(path)


def assert_same_logits(model, ref, batch) -> None:
    """Logits of the real tokens (padding positions are not compared, as in the parity tests)."""
    inputs = {k: torch.tensor(v) for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ours, expected = model(**inputs).numpy(), ref(**inputs).logits.numpy()
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], expected[real], atol=1e-4)


@pytest.mark.parametrize("layout", ["hf", "remote"])
def test_internvl_model_json_builds_the_hf_architecture(layout, tmp_path, rng):
    ref = test_internvl.hf_internvl("300m_style")
    ref.save_pretrained(tmp_path / "hf", safe_serialization=True)
    checkpoint = str(tmp_path / "hf")
    if layout == "remote":  # the original remote-code layout (packed qkv, mlp1, llm_config)
        llm_config = dict(test_internvl.TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"])
        checkpoint = test_internvl.write_remote_checkpoint(
            str(tmp_path / "remote"), test_internvl.to_remote_layout(test_internvl.saved_tensors(checkpoint)),
            test_internvl.remote_config(ref.config, llm_config))
    config = load_model_config(write(tmp_path, INTERNVL_JSON))
    model = build_model(config)
    load_pretrained(model, config, checkpoint)  # strict: every name and shape must match

    batch = test_internvl.make_batch(rng, test_internvl.SEVERAL_IMAGES)
    assert_same_logits(model, ref, batch)


def test_llava_model_json_builds_the_hf_architecture(tmp_path, rng):
    ref = test_llava.hf_llava()
    ref.save_pretrained(tmp_path, safe_serialization=True)
    config = load_model_config(write(tmp_path, LLAVA_JSON))
    model = build_model(config)
    load_pretrained(model, config, str(tmp_path))

    batch = test_llava.make_batch(rng, test_llava.SEVERAL_IMAGES, "default")
    assert_same_logits(model, ref, batch)


@pytest.mark.parametrize("data", [INTERNVL_JSON, LLAVA_JSON], ids=["internvl", "llava"])
def test_freeze_follows_the_sections(data):
    model = build_model(parse_model_config(data))
    frozen = {"vision_tower": data["image_encoder"]["vision_encoder"].get("freeze", False),
              "multi_modal_projector": data["image_encoder"]["vision_projector"].get("freeze", False),
              "language_model": data["text_decoder"].get("freeze", False)}
    names = [n for n, _ in model.named_parameters()]
    assert {n.split(".")[0] for n in names} == set(frozen)
    for name, p in model.named_parameters():
        assert p.requires_grad is not frozen[name.split(".")[0]], name


def test_text_families_and_clip_defaults():
    internlm = copy.deepcopy(INTERNVL_JSON)
    internlm["text_decoder"] = {"model_id": "internlm2", **TEXT}
    model = build_model(parse_model_config(internlm))
    assert type(model.language_model).__name__ == "InternLM2Decoder"
    assert model.config.tokens_per_tile == (test_internvl.TILE // 7 // 2) ** 2

    llava = build_model(parse_model_config(LLAVA_JSON))
    assert (llava.config.vision.activation, llava.config.vision.feature_layer) == ("quick_gelu", -2)
    assert llava.config.vision.layernorm_epsilon == 1e-5 and llava.config.select_strategy == "default"


def _with(data: dict, path: str, value) -> dict:
    out = copy.deepcopy(data)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("data,path,value,message", [
    (INTERNVL_JSON, "image_encoder.vision_encoder.patch_sise", 7,
     "image_encoder.vision_encoder.patch_sise: unknown key (did you mean 'patch_size'?)"),
    (INTERNVL_JSON, "image_encoder.vision_encoder.model_id", "clip_vit",
     "image_encoder.vision_encoder.model_id: 'clip_vit' does not fit model_id 'internvl'"),
    (INTERNVL_JSON, "image_encoder.vision_projector.ps_version", "v3", "image_encoder.vision_projector.ps_version"),
    (INTERNVL_JSON, "image_encoder.vision_encoder.image_size", 30, "image_encoder.vision_encoder: image_size (30)"),
    (INTERNVL_JSON, "image_token_id", KeyError, "image_token_id: required key is missing"),
    (INTERNVL_JSON, "text_decoder.mrope_section", [2, 2, 2], "text_decoder.mrope_section"),
    (LLAVA_JSON, "image_encoder.vision_encoder.select_strategy", "cls", "image_encoder.vision_encoder.select_strategy"),
    (LLAVA_JSON, "image_encoder.vision_projector.bias", "yes", "image_encoder.vision_projector.bias: expected bool"),
    (LLAVA_JSON, "text_decoder.model_id", "internlm2", "text_decoder.model_id: 'internlm2' does not fit model_id 'llava'"),
    (LLAVA_JSON, "text_decoder.num_layers", KeyError, "text_decoder.num_layers: required key is missing"),
])
def test_bad_keys_are_named(tmp_path, data, path, value, message):
    source = write(tmp_path, _with(data, path, value))
    with pytest.raises(ModelConfigError) as err:
        build_model(load_model_config(source))
    assert str(err.value).startswith(source) and message in str(err.value)


@pytest.mark.parametrize("field, value", [("rotary_base", 1000000.0), ("layernorm_epsilon", 1e-5)])
def test_a_text_number_that_loads_but_differs_from_the_checkpoint_is_an_error(tmp_path, field, value):
    """A wrong RoPE base or norm epsilon changes no tensor shape, so only config.json can catch it."""
    test_internvl.hf_internvl("300m_style").save_pretrained(tmp_path / "hf", safe_serialization=True)
    data = copy.deepcopy(INTERNVL_JSON)
    data["text_decoder"][field] = value
    config = load_model_config(write(tmp_path, data))
    with pytest.raises(ModelConfigError, match=rf"text_decoder\.{field} is {value}.*config\.json has text_config\."):
        load_pretrained(build_model(config), config, str(tmp_path / "hf"))
