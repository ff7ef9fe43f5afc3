"""``msmm-infer`` checks every input before the model is loaded and any prompt answered:
bad generation_config values, an empty prompt list, a prompt longer than the model's context,
a missing or corrupt image: each a clear error naming the key or the prompt index and path."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "quickstart"))
import make_quickstart_assets as assets  # noqa: E402

from msmm.infer import cli  # noqa: E402
from msmm.infer.cli import InferenceConfigError, load_inference_config  # noqa: E402

BASE = {"model": {"family": "internvl", "from_pretrained": "hf"}, "tokenizer": {"from_pretrained": "hf"},
        "prompts": ["hello"]}


@pytest.mark.parametrize("change, message", [
    ({"generation_config": {"max_new_tokens": -3}}, "generation_config.max_new_tokens: expected an integer >= 1, got -3"),
    ({"generation_config": {"max_new_tokens": "ten"}}, 'generation_config.max_new_tokens: expected an integer >= 1, got "ten"'),
    ({"generation_config": {"max_new_tokens": True}}, "generation_config.max_new_tokens: expected an integer >= 1"),
    ({"generation_config": {"do_sample": True, "temperature": 0}}, "generation_config.temperature: must be > 0 with do_sample true"),
    ({"generation_config": {"top_p": 0}}, "generation_config.top_p: expected a number in (0, 1]"),
    ({"generation_config": {"top_k": -1}}, "generation_config.top_k: expected an integer >= 0"),
    ({"generation_config": {"stop_token_ids": 2}}, "generation_config.stop_token_ids: expected a list of token ids"),
    ({"generation_config": []}, "generation_config: expected an object"),
    ({"prompts": []}, "prompts: expected a non-empty list of prompts, got []"),
    ({"prompts": "hello"}, "prompts: expected a non-empty list"),
])
def test_bad_values_name_the_key(tmp_path, change, message):
    path = tmp_path / "inference.json"
    path.write_text(json.dumps({**BASE, **change}))
    with pytest.raises(InferenceConfigError) as info:
        load_inference_config(str(path))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_msmm_infer_needs_prompts(tmp_path):
    path = tmp_path / "inference.json"
    path.write_text(json.dumps({k: v for k, v in BASE.items() if k != "prompts"}))
    load_inference_config(str(path))  # msmm-chat reads no prompts
    with pytest.raises(InferenceConfigError, match=rf"{path}: prompts: required"):
        load_inference_config(str(path), require_prompts=True)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A tokenizer, a config.json with a 256-token context, the quickstart data.json; no weights:
    loading the model is an error, so a test passing shows the inputs were all checked first."""
    hf = str(tmp_path / "hf")
    assets.write_tokenizer(hf)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"model_type": "internvl", "text_config": {"max_position_embeddings": 256}}, f)
    with open(tmp_path / "data.json", "w") as f:
        json.dump(assets.data_json(str(tmp_path), str(tmp_path / "unused.jsonl")), f)
    image = tmp_path / "ok.png"
    assets.make_scene(np.random.default_rng(0), 1)[0].save(image)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")

    def no_model(_):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "load_model", no_model)

    def run(prompts, capsys, **gen):
        config = {"model": {"family": "internvl", "from_pretrained": hf}, "tokenizer": {"from_pretrained": hf},
                  "data": str(tmp_path / "data.json"), "prompts": prompts,
                  "generation_config": {"max_new_tokens": 8, **gen}}
        path = tmp_path / "inference.json"
        path.write_text(json.dumps(config))
        code = cli.infer([str(path)])
        out = capsys.readouterr()
        assert out.out == ""  # nothing answered
        return code, out.err, str(path)

    return run, str(image), str(tmp_path)


def test_missing_and_corrupt_images_name_prompt_and_path(setup, capsys):
    run, image, tmp = setup
    ok = {"prompt": "What colour?", "images": [image]}
    code, err, path = run([ok, ok, {"prompt": "q", "images": [image, f"{tmp}/gone.png"]}], capsys)
    assert code == 2 and f"{path}: prompts[2].images[1]: {tmp}/gone.png: file not found" in err
    code, err, path = run([ok, {"prompt": "q", "images": [f"{tmp}/corrupt.png"]}], capsys)
    assert code == 2 and f"{path}: prompts[1].images[0]: {tmp}/corrupt.png: cannot be decoded" in err


def test_prompt_longer_than_the_context(setup, capsys):
    run, image, _ = setup
    code, err, path = run(["red " * 10, "red " * 2000], capsys)
    assert code == 2
    assert f"{path}: prompts[1]: " in err and "more than the model's context of 256" in err
    assert "max_position_embeddings in" in err and "generation_config.max_new_tokens 8" in err
    # max_new_tokens counts: a prompt that fits alone does not fit with 250 new tokens
    code, err, _ = run(["red " * 10], capsys, max_new_tokens=250)
    assert code == 2 and "prompts[0]" in err and "max_new_tokens 250" in err
