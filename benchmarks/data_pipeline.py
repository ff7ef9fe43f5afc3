"""Samples/s of msmm's data preprocessing against the HF processors (transformers 4.53).

Both sides read the same generated JPEGs of mixed sizes from disk, preprocess the image
(InternVL tiling / Qwen2-VL patches / CLIP crop), render and tokenise the conversation with
the vision tokens expanded, and pad a batch:

* msmm: ``MultimodalDataset.get`` + ``PaddingCollator`` through ``DataLoader``;
* HF: ``processor(text=apply_chat_template(...), images=..., padding=True)`` with the slow
  (PIL) image processors -- the fast ones need torchvision -- in the same number of worker
  processes (``multiprocessing.Pool.imap`` over batches), batches returned to the main
  process through shared memory like msmm's.

    python benchmarks/data_pipeline.py --images 200 --workers 2 --output benchmarks/data_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "data")]

from transformers import (  # noqa: E402
    CLIPImageProcessor,
    GotOcr2ImageProcessor,
    InternVLProcessor,
    LlavaProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from msmm.data.collate import PaddingCollator  # noqa: E402
from msmm.data.dataset import InternVLVision, LlavaVision, MultimodalDataset, Qwen2VLVision  # noqa: E402
from msmm.data.image_processing import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLIPImageTransform,
    InternVLImageTransform,
    Qwen2VLImageTransform,
)
from msmm.data.loader import DataLoader, share_batch, unshare_batch  # noqa: E402
from msmm.data.records import Message, Record  # noqa: E402
from msmm.data.sampler import EpochSampler  # noqa: E402
from msmm.data.templates import TEMPLATES, ConversationEncoder  # noqa: E402
from msmm.data.video import InternVLFrameSampler, Qwen2VLFrameSampler  # noqa: E402
from tokenizers_for_tests import qwen2_tokenizer  # noqa: E402  (real Qwen2 vocabulary, offline)

BATCH = 8
MAX_TILES = 6
QWEN_MAX_PIXELS = 28 * 28 * 1024
QUESTION = "<image>\nDescribe the image in detail, including the colours and the objects you can see."
ANSWER = ("The picture shows a gradient from dark blue on the left to bright orange on the right, "
          "crossed by diagonal stripes and a fine noise texture; no people or text are visible.")
CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system{{ '\\n' }}"
          "{{ default_system }}<|im_end|>{{ '\\n' }}{% endif %}<|im_start|>{{ m['role'] }}{{ '\\n' }}"
          "{{ m['content'] | replace('<image>', image_marker) }}<|im_end|>{{ '\\n' }}{% endfor %}")
VICUNA = ("{{ bos_token }}{{ default_system }}{{ ' ' }}{% for m in messages %}{% if m['role'] == 'user' %}"
          "USER: {{ m['content'] }} {% else %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def make_images(folder: str, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs, 160-1600 px a side, gradients + noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(160, 1600, 2))
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], -1)
        pixels = np.clip(pixels + rng.integers(-30, 30, pixels.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:04d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def tokenizer_for(family: str):
    tok = qwen2_tokenizer()
    if family == "llava":
        tok = tok.__class__(tokenizer_object=tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str()),
                            bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def msmm_dataset(family: str, paths: list[str], tokenizer) -> tuple[MultimodalDataset, int]:
    records = [Record([Message("user", QUESTION), Message("assistant", ANSWER)], [p], [], p) for p in paths]
    if family == "internvl":
        vision = InternVLVision(InternVLImageTransform(448, 1, MAX_TILES), InternVLFrameSampler(), 256)
        template = "internvl2_5"
    elif family == "qwen2vl":
        t = Qwen2VLImageTransform(56 * 56, QWEN_MAX_PIXELS)
        vision, template = Qwen2VLVision(t, t, Qwen2VLFrameSampler()), "qwen2vl"
    else:
        vision, template = LlavaVision(CLIPImageTransform(336, 336, pad_to_square=True)), "llava-v1"
    encoder = ConversationEncoder(tokenizer, template, family)
    return MultimodalDataset(records, encoder, vision), tokenizer.pad_token_id


def hf_processor(family: str, tokenizer):
    if family == "internvl":
        InternVLProcessor.video_processor_class = "GotOcr2ImageProcessor"  # no torchvision: no video processor
        ip = GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=MAX_TILES,
                                   image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        return InternVLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=ip, image_seq_length=256)
    if family == "qwen2vl":
        Qwen2VLProcessor.video_processor_class = "Qwen2VLImageProcessor"
        ip = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=QWEN_MAX_PIXELS)
        return Qwen2VLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=ip)
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)


_HF: dict = {}


def _hf_init(family: str, in_worker: bool = False) -> None:
    tok = tokenizer_for(family)
    _HF["in_worker"] = in_worker
    _HF["family"], _HF["processor"], _HF["tokenizer"] = family, hf_processor(family, tok), tok


def _hf_batch(paths: list[str]) -> dict:
    family, processor, tok = _HF["family"], _HF["processor"], _HF["tokenizer"]
    marker = {"internvl": "<IMG_CONTEXT>", "qwen2vl": "<|vision_start|><|image_pad|><|vision_end|>", "llava": "<image>"}[family]
    template = VICUNA if family == "llava" else CHATML
    name = {"internvl": "internvl2_5", "qwen2vl": "qwen2vl", "llava": "llava-v1"}[family]
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    text = tok.apply_chat_template(conversation, chat_template=template, tokenize=False, image_marker=marker,
                                   default_system=TEMPLATES[name].default_system)
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    if family == "llava":  # LLaVA-1.5 pad-to-square, as msmm's side does
        processor.image_processor.do_pad = True
    out = processor(text=[text] * len(paths), images=images, padding=True, return_tensors="np", add_special_tokens=False)
    batch = {k: np.asarray(v) for k, v in out.items()}
    return share_batch(batch) if _HF.get("in_worker") else batch


def run_hf(family: str, paths: list[str], workers: int) -> float:
    batches = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]
    start = time.perf_counter()
    if workers == 0:
        _hf_init(family)
        n = sum(len(b["input_ids"]) for b in map(_hf_batch, batches))
    else:  # batches come back through shared memory, as msmm's DataLoader returns them
        with multiprocessing.get_context("fork").Pool(workers, _hf_init, (family, True)) as pool:
            n = sum(len(unshare_batch(b)["input_ids"]) for b in pool.imap(_hf_batch, batches))
    return n / (time.perf_counter() - start)


def run_msmm(family: str, paths: list[str], workers: int) -> float:
    tok = tokenizer_for(family)
    dataset, pad_id = msmm_dataset(family, paths, tok)
    loader = DataLoader(dataset, EpochSampler(len(dataset), shuffle=False), PaddingCollator(pad_id), BATCH, workers, drop_last=False)
    start = time.perf_counter()
    n = sum(len(batch["input_ids"]) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--families", default="internvl,qwen2vl,llava")
    parser.add_argument("--repeats", type=int, default=1, help="alternate HF/msmm runs, keep the best of each")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "data_pipeline.json"))
    args = parser.parse_args()
    results = {"images": args.images, "batch_size": BATCH, "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        paths = make_images(folder, args.images)
        qwen2_tokenizer()  # build once before forking workers
        for family in args.families.split(","):
            for workers in (0, args.workers):
                hf = ours = 0.0
                for _ in range(args.repeats):  # alternating: a shared machine's load hits both sides
                    hf = max(hf, run_hf(family, paths, workers))
                    ours = max(ours, run_msmm(family, paths, workers))
                run = {"load_average": round(os.getloadavg()[0], 1), "family": family, "workers": workers, "msmm_samples_per_s": round(ours, 2),
                       "hf_samples_per_s": round(hf, 2), "ratio": round(ours / hf, 2)}
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
