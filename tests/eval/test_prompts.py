"""Each family's prompt for each benchmark, against the strings VLMEvalKit builds (written out
by hand here), and the token ids through the family's chat template."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from msmm.eval.datasets import DATASETS, Question, decode_images, read_tsv
from msmm.eval.prompts import PromptEncoder, VisionSettings, question_text, user_content
from tiny_bench import REPO, tiny_internvl, write_dataset

AI2D, MMMU, CHART, DOC = (DATASETS[k] for k in ("ai2d_test", "mmmu_dev_val", "chartqa_test", "docvqa_val"))


def mcq(**kw) -> Question:
    return Question(1, "0", ["x"], kw.pop("question", "Which is red?"), kw.pop("options", {"A": "apple", "B": "sky"}),
                    ["A"], **kw)


def test_multiple_choice_text_internvl_and_llava():
    expected = "Which is red?\nA. apple\nB. sky\nAnswer with the option's letter from the given choices directly."
    for family in ("internvl", "llava"):
        assert question_text(family, AI2D, mcq()) == expected
        assert question_text(family, MMMU, mcq()) == expected
    assert question_text("internvl", AI2D, mcq(hint="Look closely.")) == "Look closely.\n" + expected
    assert question_text("internvl", AI2D, mcq(question="哪个是红色的?")).endswith("\n请直接回答选项字母。")
    assert question_text("internvl", MMMU, mcq(options={})) == "Which is red?\nAnswer the question directly."


def test_multiple_choice_text_qwen():
    expected = ("Question: Which is red?\nOptions:\nA. apple\nB. sky\n"
                "Please select the correct answer from the options above.")
    for family in ("qwen2_vl", "qwen2_5_vl"):
        assert question_text(family, AI2D, mcq()) == expected
        assert question_text(family, MMMU, mcq()) == expected
    assert question_text("qwen2_vl", AI2D, mcq(hint="Look.")) == "Hint: Look.\n" + expected
    cn = question_text("qwen2_vl", AI2D, mcq(question="哪个是红色的?"))
    assert cn.endswith("B. sky\n请直接回答选项字母。")
    assert question_text("qwen2_vl", MMMU, mcq(question="哪个是红色的?")).endswith("from the options above.")
    assert question_text("qwen2_vl", MMMU, mcq(options={})) == "Question: Which is red?"


def test_vqa_text():
    q = Question(1, "0", ["x"], "What is the total?", {}, ["3"])
    for dataset in (CHART, DOC):
        assert question_text("internvl", dataset, q) == "What is the total?\nAnswer the question using a single word or phrase."
        assert question_text("llava", dataset, q) == "What is the total?\nAnswer the question using a single word or phrase."
        assert question_text("qwen2_vl", dataset, q) == (
            "What is the total?\nPlease try to answer the question with short words or phrases if possible.")
    assert question_text("internvl", CHART, q, "question") == "What is the total?"


def test_image_placement():
    assert user_content("internvl", "T", 1) == "<image>\nT"
    assert user_content("internvl", "T <image 1> <image 2>", 2) == "Image-1: <image>\nImage-2: <image>\nT <image 1> <image 2>"
    assert user_content("qwen2_vl", "T", 2) == "<image><image>T"
    assert user_content("llava", "T", 1) == " <image> T"


def test_internvl_ids_and_tiles(tmp_path):
    hf = tiny_internvl(str(tmp_path / "hf"))
    tok = AutoTokenizer.from_pretrained(hf)
    data = read_tsv(write_dataset(str(tmp_path), "mmmu_dev_val"), "mmmu_dev_val")
    q = data.questions[0]
    settings = VisionSettings("internvl", image_size=56, patch_size=7, downsample_ratio=0.5)
    enc = PromptEncoder("internvl", MMMU, tok, settings, "internvl2_5")
    ids, vision = enc(q, decode_images(q))
    # at most min(12, 64 // 2) tiles per image; 56x56 upscaled to 112x112 (MMMU's first image): 2x2 tiles
    # (3x3 would need more than half of 168x168) + thumbnail = 5; 84x56 (3:2): 3x2 + thumbnail = 7
    assert vision["pixel_values"].shape == (12, 3, 56, 56) and vision["image_flags"].tolist() == [1] * 12
    context = "<img>" + "<IMG_CONTEXT>" * 16 * 5 + "</img>", "<img>" + "<IMG_CONTEXT>" * 16 * 7 + "</img>"
    text = question_text("internvl", MMMU, q)
    expected = ("<|im_start|>system\n你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
                f"<|im_end|>\n<|im_start|>user\nImage-1: {context[0]}\nImage-2: {context[1]}\n{text}<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert tok.decode(ids) == expected
    assert enc.stop_token_ids() == [tok.convert_tokens_to_ids("<|im_end|>")]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_qwen_and_llava_ids(tmp_path, family):
    sys.path.insert(0, os.path.join(REPO, "examples", "tiny"))
    import make_tiny_assets

    make_tiny_assets.write_tokenizer(str(tmp_path / "tok"), "qwen2vl" if family == "qwen2_vl" else "llava")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    data = read_tsv(write_dataset(str(tmp_path), "ai2d_test"), "ai2d_test")
    q = data.questions[1]  # 84 x 56
    if family == "qwen2_vl":
        settings = VisionSettings("qwen2_vl", patch_size=14, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
        ids, vision = PromptEncoder(family, AI2D, tok, settings, "qwen2vl")(q, decode_images(q))
        assert vision["image_grid_thw"].tolist() == [[1, 4, 6]]  # 56 x 84 px in 14 px patches
        image = "<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>"  # 24 patches / 2x2 merge
        expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"{image}{question_text(family, AI2D, q)}<|im_end|>\n<|im_start|>assistant\n")
    else:
        settings = VisionSettings("llava", image_size=28, patch_size=14)
        ids, vision = PromptEncoder(family, AI2D, tok, settings, "llava-v1")(q, decode_images(q))
        assert vision["pixel_values"].shape == (1, 3, 28, 28)
        # VLMEvalKit: system + "USER: " + " <image> " + prompt + " ASSISTANT: "
        expected = ("<s>A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the human's questions. USER:  " + "<image>" * 4
                    + f" {question_text(family, AI2D, q)} ASSISTANT: ")
    assert tok.decode(ids) == expected
