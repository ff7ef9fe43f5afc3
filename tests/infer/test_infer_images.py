"""``msmm-infer`` with image paths (InternVL), on MindSpore as the console script runs it:
the prompt built from the training data.json equals one written out by hand (ChatML text,
<IMG_CONTEXT> per image embedding, a 56 px bicubic resize normalised with ImageNet
statistics), and the streamed answer equals HF ``generate`` and msmm ``generate`` (real
torch) on those hand-made inputs."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(REPO, "examples", "quickstart"))
sys.path.insert(0, os.path.join(REPO, "tests", "models"))
import make_quickstart_assets as assets  # noqa: E402
import ms_backend  # noqa: E402

from msmm.infer.generate import GenerationConfig, generate  # noqa: E402

NEW = 5
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def hand_made_inputs(tokenizer, image_path: str, question: str, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    text = (f"<|im_start|>system\n{assets.SYSTEM}<|im_end|>\n<|im_start|>user\n<img>{'<IMG_CONTEXT>' * tokens}</img>\n"
            f"{question}<|im_end|>\n<|im_start|>assistant\n")
    ids = np.array([tokenizer(text, add_special_tokens=False)["input_ids"]], np.int64)
    image = Image.open(image_path).convert("RGB").resize((assets.IMAGE_SIZE,) * 2, Image.BICUBIC)
    pixels = ((np.asarray(image, np.float64) / 255 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    return ids, pixels


def test_msmm_infer_image_prompt_matches_generate(tmp_path, capsys):
    from transformers import InternVLForConditionalGeneration

    from msmm.infer.cli import infer
    from msmm.models import from_pretrained

    hf_dir = str(tmp_path / "hf")
    tokenizer = assets.write_tokenizer(hf_dir)
    assets.write_hf_model(hf_dir, tokenizer, seed=3)
    image, _ = assets.make_scene(np.random.default_rng(1), 2)
    image = image.resize((70, 60))  # not the tile size: the preprocessing resizes
    image_path = str(tmp_path / "scene.png")
    image.save(image_path)
    with open(tmp_path / "data.json", "w") as f:
        json.dump(assets.data_json(str(tmp_path), image_path), f)
    question = assets.colour_question("circle")
    config = {"model": {"family": "internvl", "from_pretrained": hf_dir}, "tokenizer": {"from_pretrained": hf_dir},
              "data": str(tmp_path / "data.json"), "system": assets.SYSTEM,
              "prompts": [{"prompt": question, "images": [image_path]}],
              "generation_config": {"max_new_tokens": NEW, "stop_token_ids": []}}
    with open(tmp_path / "inference.json", "w") as f:
        json.dump(config, f)

    capsys.readouterr()
    with ms_backend.converted_in_sys_modules():
        assert infer([str(tmp_path / "inference.json")]) == 0
    out = capsys.readouterr().out.split("\n")  # the random model's answer may hold other line breaks

    tokens = (assets.IMAGE_SIZE // assets.PATCH_SIZE) ** 2 // 4
    ids, pixels = hand_made_inputs(tokenizer, image_path, question, tokens)
    ours = generate(from_pretrained(hf_dir).eval(), ids, None, GenerationConfig(max_new_tokens=NEW),
                    pixel_values=pixels)
    ref = InternVLForConditionalGeneration.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        hf = ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.ones_like(torch.tensor(ids)),
                          pixel_values=torch.tensor(pixels), max_new_tokens=NEW, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(ours, hf)
    assert out[0] == f">>> [{image_path}] {question}"
    assert "\n".join(out[1:]) == tokenizer.decode(ours[0].tolist(), skip_special_tokens=True) + "\n"


def test_image_prompts_need_the_training_data_json(tmp_path):
    import pytest

    from msmm.infer.cli import InferenceConfigError, load_inference_config

    base = {"model": {"family": "internvl", "from_pretrained": "hf"}, "tokenizer": {"from_pretrained": "hf"}}
    for prompts, message in (([{"prompt": "q", "images": ["a.png"]}], r"prompts\[0\] has images or videos: set \"data\""),
                             ([{"prompt": "q", "image": "a.png"}], r"prompts\[0\]\.image: unknown key"),
                             ([{"prompt": "q", "images": "a.png"}], r"prompts\[0\]\.images: expected a list")):
        path = tmp_path / "inference.json"
        path.write_text(json.dumps(dict(base, prompts=prompts)))
        with pytest.raises(InferenceConfigError, match=message):
            load_inference_config(str(path))
