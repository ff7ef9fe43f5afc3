"""msmm-serve's prompts from the checkpoint alone (config.json, preprocessor_config.json,
tokenizer) for the tiny checkpoints of ``make_tiny_assets --hf-model``: for InternVL and
Qwen2-VL the same token ids and vision inputs as msmm-infer's prompt from the training
data.json; LLaVA's in its chat template (``llava-v1``) with one image token per patch."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "examples", "tiny"))
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
import make_tiny_assets as tiny  # noqa: E402

from msmm.registry import family_of_hf_config  # noqa: E402

QUESTION = "What colour is the square in the picture?"


def write_assets(out: str, family: str) -> str:
    ids = tiny.write_tokenizer(os.path.join(out, "tokenizer"), family)
    annotation = tiny.write_data(out, 2, np.random.default_rng(0), family)
    model_json, data_json = tiny.FAMILIES[family]
    tiny.write_hf_model(os.path.join(out, "hf"), family, model_json(ids), os.path.join(out, "tokenizer"))
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(data_json(out, annotation), f)
    return out


def server_builder(hf: str):
    from transformers import AutoTokenizer

    from msmm.serve.prompt import ChatPromptBuilder

    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    return ChatPromptBuilder(family_of_hf_config(config).name, config, AutoTokenizer.from_pretrained(hf), hf)


@pytest.mark.parametrize("family", ["qwen2vl", "internvl"])
def test_prompt_equals_msmm_infer_data_json_prompt(tmp_path, family):
    from transformers import AutoTokenizer

    from msmm.infer.prompt import PromptBuilder

    out = write_assets(str(tmp_path), family)
    image_path = os.path.join(out, "images", "1.png")
    expected = PromptBuilder(os.path.join(out, "data.json"), AutoTokenizer.from_pretrained(os.path.join(out, "hf")))(
        {"prompt": QUESTION, "images": [image_path]})
    build = server_builder(os.path.join(out, "hf"))
    got = build([("user", [Image.open(image_path).convert("RGB"), QUESTION])])
    np.testing.assert_array_equal(got.input_ids, expected.input_ids)
    assert sorted(got.vision) == sorted(expected.vision)
    for key, value in expected.vision.items():
        np.testing.assert_allclose(got.vision[key], value, rtol=0, atol=1e-6)
    assert got.vision_tokens == np.isin(got.input_ids, build.encoder.context_ids).sum() > 0


def test_llava_prompt_uses_its_chat_template(tmp_path):
    out = write_assets(str(tmp_path), "llava")
    build = server_builder(os.path.join(out, "hf"))
    image = Image.open(os.path.join(out, "images", "0.png")).convert("RGB")
    prompt = build([("system", ["Be brief."]), ("user", [image, QUESTION]), ("assistant", ["Red."]),
                    ("user", ["And now?"])])
    text = build.encoder.tokenizer.decode(prompt.input_ids[0])
    assert text.startswith("<s>Be brief. USER: <image>") and text.endswith("USER: And now? ASSISTANT: ")
    assert "ASSISTANT: Red.</s>" in text
    assert prompt.vision_tokens == (56 // 14) ** 2 == text.count("<image>")
    assert prompt.vision["pixel_values"].shape == (1, 3, 56, 56)
    with pytest.raises(ValueError, match="literal"):
        build([("user", ["look: <image>"])])


@pytest.mark.parametrize("family", ["qwen2vl", "internvl"])
def test_video_prompt_equals_msmm_infer_data_json_prompt(tmp_path, family):
    """A video and an image (InternVL: 8 frames at segment middles, msmm-serve's choice, set in
    the data.json too)."""
    from transformers import AutoTokenizer

    from msmm.infer.prompt import PromptBuilder
    from msmm.serve.media import MediaLimits, load_video
    from test_video import write_video

    out = write_assets(str(tmp_path), family)
    if family == "internvl":
        with open(os.path.join(out, "data.json")) as f:
            data = json.load(f)
        data["dataset_param"].update(sampling_method="middle", min_num_frame=8, max_num_frame=8)
        with open(os.path.join(out, "data.json"), "w") as f:
            json.dump(data, f)
    video, image_path = os.path.join(out, "clip.mp4"), os.path.join(out, "images", "1.png")
    write_video(video, num_frames=12, size=(64, 48))
    expected = PromptBuilder(os.path.join(out, "data.json"), AutoTokenizer.from_pretrained(os.path.join(out, "hf")))(
        {"prompt": QUESTION, "images": [image_path], "videos": [video]})
    build = server_builder(os.path.join(out, "hf"))
    frames = load_video("file://" + video, MediaLimits((out,)), "video", build.frames)
    got = build([("user", [Image.open(image_path).convert("RGB"), frames, QUESTION])])
    np.testing.assert_array_equal(got.input_ids, expected.input_ids)
    assert sorted(got.vision) == sorted(expected.vision)
    for key, value in expected.vision.items():
        np.testing.assert_allclose(got.vision[key], value, rtol=0, atol=1e-6)
