"""``msmm-infer`` with image and video paths for Qwen2-VL, Qwen2.5-VL and LLaVA, on
MindSpore as the console script runs it: the prompt goes through the training data.json's
template and preprocessing (tested against the HF processors in tests/data), and the
streamed answer equals HF ``generate`` on real torch given the same inputs (HF checks that
the vision token counts match the pixel values and grids)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "convert"))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
sys.path.insert(0, os.path.join(HERE, "..", "data"))
import ms_backend  # noqa: E402
import tiny_hf  # noqa: E402
from test_video import write_video  # noqa: E402

NEW = 6
WORDS = ["system", "user", "assistant", "You", "are", "a", "helpful", ".", "What", "is", "in", "the", "image",
         "video", "?", "USER", "ASSISTANT", ":"]
SPECIALS = {  # family -> {id: token}, the ids the tiny HF models use
    "qwen2vl": {tiny_hf.VISION_START: "<|vision_start|>", tiny_hf.VISION_START + 1: "<|vision_end|>",
                tiny_hf.IMAGE: "<|image_pad|>", tiny_hf.VIDEO: "<|video_pad|>", 93: "<|im_start|>", 94: "<|im_end|>"},
    "llava": {1: "<s>", 2: "</s>", tiny_hf.IMAGE: "<image>"},
}


def word_tokenizer(family: str, directory: str):
    """A word-level tokenizer over the tiny models' vocabulary with the family's special tokens at their ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    vocab = {"<unk>": 0}
    words = iter(WORDS + [f"w{i}" for i in range(tiny_hf.VOCAB)])
    for i in range(1, tiny_hf.VOCAB):
        vocab[specials[i] if i in specials else next(words)] = i
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = dict(bos_token="<s>", eos_token="</s>") if family == "llava" else dict(eos_token="<|im_end|>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", **extra,
                                        additional_special_tokens=[t for t in specials.values() if t not in extra.values()])
    tokenizer.save_pretrained(directory)
    return tokenizer


def data_json(family: str, directory: str) -> dict:
    annotation = os.path.join(directory, "unused.json")
    with open(annotation, "w") as f:
        json.dump([], f)
    if family == "qwen2vl":
        return {"dataset_param": {
            "dataset_type": "huggingface",
            "preprocess_parameters": {"model_name_or_path": directory, "image_min_pixels": 3136,
                                      "image_max_pixels": 3136, "video_min_pixels": 3136, "video_max_pixels": 3136},
            "basic_parameters": {"template": "qwen2vl", "dataset_dir": directory, "dataset": annotation},
            "tokenizer_config": {"from_pretrained": directory}},
            "dataloader_param": {"num_workers": 0}}
    return {"dataset_param": {
        "dataset_type": "multimodal",
        "basic_parameters": {"template_name": "llava-v1", "data_path": annotation, "data_folder": directory},
        "tokenizer_config": {"from_pretrained": directory}, "crop_size": 28, "patch_size": 7},
        "dataloader_param": {"num_workers": 0, "collate_param": {"model_name": "llava"}}}


CASES = {  # name: (inference family, data family, HF model, prompt media)
    "qwen2_vl_image": ("qwen2_vl", "qwen2vl", lambda: tiny_hf.qwen2_vl("qwen2_vl", patch_size=14), ("image",)),
    "qwen2_vl_video_and_image": ("qwen2_vl", "qwen2vl", lambda: tiny_hf.qwen2_vl("qwen2_vl", patch_size=14),
                                 ("video", "image")),
    "qwen2_5_vl_image": ("qwen2_5_vl", "qwen2vl",
                         lambda: tiny_hf.qwen2_vl("qwen2_5_vl", patch_size=14, window_size=56), ("image",)),
    "llava_image": ("llava", "llava", tiny_hf.llava, ("image",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_msmm_infer_media_prompt_matches_hf_generate(name, tmp_path, capsys):
    from msmm.infer.cli import infer
    from msmm.infer.prompt import PromptBuilder

    family, data_family, build, media = CASES[name]
    ref = build()
    directory = tiny_hf.save(ref, str(tmp_path / "hf"))
    tokenizer = word_tokenizer(data_family, directory)
    with open(tmp_path / "data.json", "w") as f:
        json.dump(data_json(data_family, directory), f)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 70, 3), np.uint8))
    image.save(tmp_path / "image.png")
    write_video(tmp_path / "clip.mp4", num_frames=20, size=(64, 48))
    spec = {"prompt": "What is in the image ?"}
    if "image" in media:
        spec["images"] = [str(tmp_path / "image.png")]
    if "video" in media:
        spec["videos"] = [str(tmp_path / "clip.mp4")]
    config = {"model": {"family": family, "from_pretrained": directory}, "tokenizer": {"from_pretrained": directory},
              "data": str(tmp_path / "data.json"), "prompts": [spec],
              "generation_config": {"max_new_tokens": NEW, "stop_token_ids": []}}
    with open(tmp_path / "inference.json", "w") as f:
        json.dump(config, f)

    capsys.readouterr()
    with ms_backend.converted_in_sys_modules():
        assert infer([str(tmp_path / "inference.json")]) == 0
    out = capsys.readouterr().out.split("\n")

    prompt = PromptBuilder(str(tmp_path / "data.json"), tokenizer)(spec)
    ids = prompt.input_ids
    if "image" in media:
        assert (ids == ref.config.image_token_id).sum() > 0
    if "video" in media:
        assert (ids == tiny_hf.VIDEO).sum() > 0 and "pixel_values_videos" in prompt.vision
    vision = {k: torch.tensor(v) for k, v in prompt.vision.items() if k != "image_flags"}
    with torch.no_grad():
        hf = ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.ones_like(torch.tensor(ids)), **vision,
                          max_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:]
    assert out[0].startswith(">>> [") and out[0].endswith("] What is in the image ?")
    assert "\n".join(out[1:]) == tokenizer.decode(hf.tolist(), skip_special_tokens=True) + "\n"
