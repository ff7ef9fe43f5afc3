"""model.json for Qwen2-VL / Qwen2.5-VL: builds the HF architecture, freezes sections,
and rejects bad input with errors naming the key."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from msmm.models import ModelConfigError, build_model, load_hf_weights, load_model_config, parse_model_config
from test_qwen2_vl import CASES, IMAGE, VIDEO, VISION_START, hf_model, make_inputs

MODEL_JSON = {
    "model_id": "qwen2_5_vl",
    "image_token_id": IMAGE,
    "video_token_id": VIDEO,
    "vision_start_token_id": VISION_START,
    "image_encoder": {
        "vision_encoder": {
            "model_id": "qwen2_5_vit",
            "num_layers": 2,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "ffn_hidden_size": 48,
            "patch_size": 4,
            "window_size": 16,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "freeze": True,
        },
        "vision_projector": {"model_id": "patch_merger", "freeze": False},
    },
    "text_decoder": {
        "model_id": "qwen2",
        "num_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_query_groups": 2,
        "ffn_hidden_size": 128,
        "vocab_size": 100,
        "add_qkv_bias": True,
        "rotary_base": 10000.0,
        "mrope_section": [2, 3, 3],
        "freeze": False,
    },
}


def test_model_json_builds_the_hf_architecture(tmp_path, rng):
    ref = hf_model("qwen2_5_vl")
    ref.save_pretrained(tmp_path, safe_serialization=True)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(MODEL_JSON))
    model = build_model(load_model_config(str(path)))
    load_hf_weights(model, str(tmp_path), "qwen2_vl")  # strict: names and shapes must all match

    batch = make_inputs(rng, CASES["one_image"])
    with torch.no_grad():
        ours = model(**{k: torch.tensor(v) for k, v in batch.items()})[1]
        theirs = ref(**{k: torch.tensor(v) for k, v in batch.items()}, use_cache=False).logits
    assert (ours - theirs).abs().max() <= 1e-4

    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("visual.") and not n.startswith("visual.merger.") for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("visual.merger."))
    assert any(n.startswith("visual.blocks.") for n in frozen)


def _broken(edit) -> dict:
    data = copy.deepcopy(MODEL_JSON)
    edit(data)
    return data


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["text_decoder"].update(num_layer=2), "text_decoder.num_layer: unknown key (did you mean 'num_layers'?)"),
        (lambda d: d["text_decoder"].pop("hidden_size"), "text_decoder.hidden_size: required key is missing"),
        (lambda d: d["text_decoder"].update(num_layers="2"), "text_decoder.num_layers: expected int"),
        (lambda d: d["text_decoder"].update(freeze="yes"), "text_decoder.freeze: expected bool"),
        (lambda d: d["text_decoder"].update(mrope_section=[2, "3", 3]), "text_decoder.mrope_section[1]: expected int"),
        (lambda d: d["image_encoder"]["vision_encoder"].update(model_id="vit"), "image_encoder.vision_encoder.model_id: must be one of"),
        (lambda d: d["image_encoder"].pop("vision_projector"), "image_encoder.vision_projector: required key is missing"),
        (lambda d: d["image_encoder"].update(projector={}), "image_encoder.projector: unknown key"),
        (lambda d: d.update(image_token=1), "image_token: unknown key for model_id 'qwen2_5_vl' (did you mean 'image_token_id'?)"),
        (lambda d: d.pop("video_token_id"), "video_token_id: required key is missing"),
        (lambda d: d.update(model_id="qwen3"), "model_id must be one of"),
    ],
)
def test_bad_model_json_names_the_key(edit, message):
    with pytest.raises(ModelConfigError) as err:
        parse_model_config(_broken(edit), source="model.json")
    assert message in str(err.value) and str(err.value).startswith("model.json")


def test_builder_checks_cross_field_rules():
    data = _broken(lambda d: d["image_encoder"]["vision_encoder"].pop("window_size"))
    with pytest.raises(ModelConfigError, match="vision_encoder.window_size: required for model_id 'qwen2_5_vit'"):
        build_model(parse_model_config(data))


def test_invalid_json_reports_the_line(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{\n  "model_id": "qwen2_vl",\n  "text_decoder": {,}\n}')
    with pytest.raises(ModelConfigError, match=r"model.json: line 3: invalid JSON"):
        load_model_config(str(path))
