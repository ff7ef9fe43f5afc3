"""Tiny benchmark TSVs in VLMEvalKit's four formats, made in code, and a tiny InternVL."""
from __future__ import annotations

import base64
import json
import os
import sys

import numpy as np
from PIL import Image

from msmm.eval.datasets import encode_image, write_tsv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (235, 215, 40)]
BROKEN_IMAGE = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png " * 3).decode()


def image(rng: np.random.Generator, width: int = 56, height: int = 56) -> str:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = COLOURS[int(rng.integers(4))]
    pixels[rng.integers(height // 2):, : rng.integers(1, width)] = COLOURS[int(rng.integers(4))]
    return encode_image(Image.fromarray(pixels))


def ai2d_rows(rng, n: int = 6) -> list:
    """AI2D_TEST.tsv: one image, four options, a letter answer, a category; plus a row
    sharing row 0's image by reference and three bad rows (undecodable image, no answer,
    an option gap)."""
    rows = []
    for i in range(n):
        rows.append({"index": i, "image": image(rng, 56 + 28 * (i % 2), 56), "question": f"Which colour is part {i}?",
                     "A": "red", "B": "green", "C": "blue", "D": "yellow", "answer": "ABCD"[i % 4],
                     "category": "colour" if i % 2 else "shape"})
    rows.append({**rows[0], "index": n, "image": "0", "question": "Same picture, which colour?", "answer": "C"})
    rows.append({**rows[1], "index": n + 1, "image": BROKEN_IMAGE})
    rows.append({**rows[1], "index": n + 2, "answer": None})
    rows.append({**rows[1], "index": n + 3, "C": None})
    return rows


def mmmu_rows(rng, n: int = 4) -> list:
    """MMMU_DEV_VAL.tsv: two images as a list literal with image_path, <image N> references in
    the question and options, dev / validation splits, categories; one open question."""
    rows = []
    for i in range(n):
        rows.append({"index": f"validation_Art_{i}", "image": str([image(rng), image(rng, 84, 56)]),
                     "image_path": str([f"v{i}_1.png", f"v{i}_2.png"]),
                     "question": f"Compare <image 1> and <image 2>. Which is brighter ({i})?",
                     "A": "<image 1>", "B": "<image 2>", "C": "both", "answer": "ABC"[i % 3],
                     "split": "dev" if i < 2 else "validation", "category": "Art" if i % 2 else "Math"})
    rows.append({"index": "validation_Math_9", "image": image(rng), "question": "How many sides does <image 1> show?",
                 "answer": "4", "split": "validation", "category": "Math"})
    return rows


def chartqa_rows(rng, n: int = 4) -> list:
    return [{"index": i, "image": image(rng, 84, 56), "question": f"What is the value of bar {i}?",
             "answer": str(10 * (i + 1)), "split": "human" if i % 2 else "augmented"} for i in range(n)]


def docvqa_rows(rng, n: int = 4) -> list:
    return [{"index": i, "image": image(rng, 56, 84), "question": f"What is the title of page {i}?",
             "answer": str([f"title {i}", f"the title {i}"])} for i in range(n)]


FORMATS = {"ai2d_test": ("AI2D_TEST.tsv", ai2d_rows), "mmmu_dev_val": ("MMMU_DEV_VAL.tsv", mmmu_rows),
           "chartqa_test": ("ChartQA_TEST.tsv", chartqa_rows), "docvqa_val": ("DocVQA_VAL.tsv", docvqa_rows)}


def write_dataset(directory: str, dataset: str, seed: int = 0, rows=None) -> str:
    name, make = FORMATS[dataset]
    os.makedirs(directory, exist_ok=True)
    return write_tsv(os.path.join(directory, name), rows if rows is not None else make(np.random.default_rng(seed)))


def tiny_internvl(directory: str) -> str:
    """The quickstart's tiny InternVL (random weights) and tokenizer, in HF format."""
    sys.path.insert(0, os.path.join(REPO, "examples", "quickstart"))
    import make_quickstart_assets as assets

    if not os.path.exists(os.path.join(directory, "config.json")):
        tokenizer = assets.write_tokenizer(directory)
        assets.write_hf_model(directory, tokenizer)
    return directory


def eval_json(path: str, hf_dir: str, dataset_path: str, dataset: str, out: str, **extra) -> str:
    """MindSpeed-MM's evaluate json keys, the model given as the HF dir in tokenizer.from_pretrained."""
    cfg = {"model_id": "InternVLPipeline", "evaluation_model": "internvl2_tiny", "evaluation_dataset": dataset,
           "dataset_path": dataset_path, "result_output_path": out,
           "tokenizer": {"hub_backend": "hf", "autotokenizer_name": "AutoTokenizer", "from_pretrained": hf_dir},
           "generation_config": {"do_sample": False, "max_new_tokens": 4, "eos_token_id": 2, "top_p": None,
                                 "use_cache": False, "num_beams": 1},
           **extra}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path
