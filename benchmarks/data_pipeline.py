"""msmm's image preprocessing against the HF processors (transformers 4.53, the slow PIL-based
ones: the fast ones need torchvision), per stage and end to end, one thread each.

Three peers, each run in its own fresh process (none imports MindSpore; asserted):

* ``hf``: ``GotOcr2ImageProcessor`` (InternVL tiles), ``Qwen2VLImageProcessor``,
  ``LlavaImageProcessor`` (CLIP 336 with pad-to-square);
* ``msmm_pil``: msmm's transforms with ``MSMM_FUSED_KERNELS=0``: PIL's resize, then the
  normalisation table and the layout copy in numpy (msmm before the resize kernel);
* ``msmm``: msmm's transforms with the resize kernel (``msmm/data/csrc/resize.cpp``):
  resize + rescale/normalise + tile/patch/crop layout in one pass.

All three produce the same pixel values bit for bit (tests/data/test_image_processing.py).

``stages``: per image of each size class (JPEGs written here, upscaled and downscaled, square,
tall and panoramic), the median thread CPU milliseconds (wall time on an idle machine, and
steady when the machine is shared) of decode (``Image.open`` + ``load`` +
``convert("RGB")``), resize (time inside PIL's ``Image.resize``), rescale + normalise (HF's
``rescale`` and ``normalize``; msmm's table look-up), the fused kernel call, and the rest
(patchify / tiling / crop / pad / conversions between PIL and numpy).
``pipeline``: samples/s of the whole data path: image decode and preprocessing, chat template
and tokenisation with the vision tokens expanded, padding a batch of 8 (msmm:
``MultimodalDataset`` + ``PaddingCollator`` through ``DataLoader``; HF: ``processor(text=...,
images=..., padding=True)``), in the main process (workers 0) unless ``--workers`` adds more;
wall clock, and for workers 0 also per CPU second of the process; the median of two passes
after an untimed one (steady state: a fresh process's first pass page-faults in its memory).

Peers alternate run by run; each figure is the median over ``--repeats`` runs. Thread pools
are held to one thread (``TOKENIZERS_PARALLELISM=false``, ``RAYON_NUM_THREADS=1``,
``OMP_NUM_THREADS=1``): HF's image processors are single-threaded, so is msmm's kernel.

    python benchmarks/data_pipeline.py --output benchmarks/data_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "data"), os.path.dirname(os.path.abspath(__file__))]

from _env import machine  # noqa: E402  (reads /proc only: no torch, no MindSpore)

PEERS = {"hf": {}, "msmm_pil": {"MSMM_FUSED_KERNELS": "0"}, "msmm": {"MSMM_FUSED_KERNELS": "1"}}
ONE_THREAD = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
FAMILIES = ("internvl", "qwen2vl", "llava")
# (name, width, height): upscaled, VGA, HD, large, tall, panorama
SIZE_CLASSES = [("small 320x240", 320, 240), ("vga 640x480", 640, 480), ("hd 1280x720", 1280, 720),
                ("large 2048x1536", 2048, 1536), ("tall 600x1800", 600, 1800), ("panorama 2400x480", 2400, 480)]
CLOCK = time.thread_time  # stage timings: CPU time of the (only) working thread
BATCH = 8
PASSES = 2  # timed pipeline passes per process, after an untimed one
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


def write_image(path: str, width: int, height: int, rng: np.random.Generator) -> str:
    """A JPEG of gradients, stripes and noise."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], -1)
    pixels = np.clip(pixels + rng.integers(-30, 30, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def make_images(folder: str, per_class: int, mixed: int, seed: int = 0) -> Dict[str, List[str]]:
    """``per_class`` images of each size class, and ``mixed`` of random sizes (160-1600 px a side)."""
    rng = np.random.default_rng(seed)
    images = {name: [write_image(os.path.join(folder, f"{name.split()[0]}{i}.jpg"), w, h, rng) for i in range(per_class)]
              for name, w, h in SIZE_CLASSES}
    sizes = rng.integers(160, 1600, (mixed, 2))
    images["mixed"] = [write_image(os.path.join(folder, f"mixed{i:03d}.jpg"), int(w), int(h), rng) for i, (w, h) in enumerate(sizes)]
    return images


# ----------------------------------------------------------------------------- peers (run in workers)


def hf_image_processor(family: str):
    from transformers import GotOcr2ImageProcessor, LlavaImageProcessor, Qwen2VLImageProcessor

    from msmm.data.image_processing import IMAGENET_MEAN, IMAGENET_STD

    if family == "internvl":
        return GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=MAX_TILES,
                                     image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    if family == "qwen2vl":
        return Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=QWEN_MAX_PIXELS)
    return LlavaImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)


def msmm_transform(family: str):
    from msmm.data.image_processing import CLIPImageTransform, InternVLImageTransform, Qwen2VLImageTransform

    if family == "internvl":
        return InternVLImageTransform(448, 1, MAX_TILES)
    if family == "qwen2vl":
        return Qwen2VLImageTransform(56 * 56, QWEN_MAX_PIXELS)
    return CLIPImageTransform(336, 336, pad_to_square=True)


class StageTimer:
    """Seconds spent inside wrapped methods, by stage (the outermost wrapped call counts)."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._depth = 0

    def wrap(self, owner, name: str, stage: str) -> None:
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            self._depth += 1
            start = CLOCK()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[stage] = self.seconds.get(stage, 0.0) + CLOCK() - start

        setattr(owner, name, timed)


def stage_worker(peer: str, family: str, images: Dict[str, List[str]], passes: int) -> dict:
    """Per size class, per stage: median milliseconds per image over the images and passes."""
    timer = StageTimer()
    timer.wrap(Image.Image, "resize", "resize")
    if peer == "hf":
        from transformers.image_processing_utils import BaseImageProcessor

        processor = hf_image_processor(family)
        timer.wrap(BaseImageProcessor, "rescale", "rescale_normalize")
        timer.wrap(BaseImageProcessor, "normalize", "rescale_normalize")

        def decode(path: str) -> Image.Image:
            with Image.open(path) as image:
                return image.convert("RGB")

        run: Callable = lambda image: processor(images=image, return_tensors="np")  # noqa: E731
    else:
        from msmm.data.image_processing import PixelNormalizer, load_image
        from msmm.data.resize import NativeResize, native

        assert (native() is not None) == (peer == "msmm"), f"{peer}: resize kernel {'missing' if native() is None else 'on'}"
        decode, run = load_image, msmm_transform(family)
        timer.wrap(PixelNormalizer, "__call__", "rescale_normalize")
        timer.wrap(NativeResize, "resize_normalize", "fused_resize_normalize_layout")
    samples: Dict[str, Dict[str, List[float]]] = {}
    for _ in range(passes):
        for size_class, paths in images.items():
            for path in paths:
                start = CLOCK()
                image = decode(path)
                decoded = CLOCK()
                timer.seconds.clear()
                run(image)
                total = CLOCK() - decoded
                stages = {"decode": decoded - start, **timer.seconds}
                stages["other"] = total - sum(timer.seconds.values())
                stages["total"] = total + stages["decode"]
                for stage, seconds in stages.items():
                    samples.setdefault(size_class, {}).setdefault(stage, []).append(seconds * 1e3)
    return {size_class: {stage: statistics.median(v) for stage, v in by_stage.items()} for size_class, by_stage in samples.items()}


def tokenizer_for(family: str):
    from tokenizers_for_tests import qwen2_tokenizer  # the real Qwen2 vocabulary, offline

    tok = qwen2_tokenizer()
    if family == "llava":
        tok = tok.__class__(tokenizer_object=tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str()),
                            bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def hf_pipeline(family: str, paths: List[str], workers: int) -> Tuple[float, float]:
    """Samples per second and per process CPU second of ``processor(text, images, padding=True)``
    over batches of BATCH."""
    import multiprocessing

    from transformers import InternVLProcessor, LlavaProcessor, Qwen2VLProcessor

    from msmm.data.loader import unshare_batch
    from msmm.data.templates import TEMPLATES

    def processor_for(tok):
        ip = hf_image_processor(family)
        if family == "internvl":
            InternVLProcessor.video_processor_class = "GotOcr2ImageProcessor"  # no torchvision: no video processor
            return InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=ip, image_seq_length=256)
        if family == "qwen2vl":
            Qwen2VLProcessor.video_processor_class = "Qwen2VLImageProcessor"
            return Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=ip)
        return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1)

    tok = tokenizer_for(family)
    processor = processor_for(tok)
    marker = {"internvl": "<IMG_CONTEXT>", "qwen2vl": "<|vision_start|><|image_pad|><|vision_end|>", "llava": "<image>"}[family]
    name = {"internvl": "internvl2_5", "qwen2vl": "qwen2vl", "llava": "llava-v1"}[family]
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    text = tok.apply_chat_template(conversation, chat_template=VICUNA if family == "llava" else CHATML, tokenize=False,
                                   image_marker=marker, default_system=TEMPLATES[name].default_system)

    def batch(chunk: List[str]) -> dict:
        images = []
        for path in chunk:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        out = processor(text=[text] * len(chunk), images=images, padding=True, return_tensors="np", add_special_tokens=False)
        return {k: np.asarray(v) for k, v in out.items()}

    chunks = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]

    def one_pass() -> int:
        if workers == 0:
            return sum(len(b["input_ids"]) for b in map(batch, chunks))
        _FORKED["batch"] = batch  # batches come back through shared memory, as msmm's DataLoader returns them
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return sum(len(unshare_batch(b)["input_ids"]) for b in pool.imap(_shared_batch, chunks))

    return steady_rate(one_pass)


_FORKED: Dict[str, Callable] = {}  # the batch function, inherited by forked pool workers


def _shared_batch(chunk: List[str]) -> dict:
    from msmm.data.loader import share_batch

    return share_batch(_FORKED["batch"](chunk))


def msmm_pipeline(family: str, paths: List[str], workers: int) -> Tuple[float, float]:
    """Samples per second and per process CPU second of ``MultimodalDataset`` +
    ``PaddingCollator`` through ``DataLoader``."""
    from msmm.data.collate import PaddingCollator
    from msmm.data.dataset import InternVLVision, LlavaVision, MultimodalDataset, Qwen2VLVision
    from msmm.data.loader import DataLoader
    from msmm.data.records import Message, Record
    from msmm.data.sampler import EpochSampler
    from msmm.data.templates import ConversationEncoder
    from msmm.data.video import InternVLFrameSampler, Qwen2VLFrameSampler

    tok = tokenizer_for(family)
    transform = msmm_transform(family)
    if family == "internvl":
        vision, template = InternVLVision(transform, InternVLFrameSampler(), 256), "internvl2_5"
    elif family == "qwen2vl":
        vision, template = Qwen2VLVision(transform, transform, Qwen2VLFrameSampler()), "qwen2vl"
    else:
        vision, template = LlavaVision(transform), "llava-v1"
    def loader(paths: List[str]) -> DataLoader:
        records = [Record([Message("user", QUESTION), Message("assistant", ANSWER)], [p], [], p) for p in paths]
        dataset = MultimodalDataset(records, ConversationEncoder(tok, template, family), vision)
        return DataLoader(dataset, EpochSampler(len(dataset), shuffle=False), PaddingCollator(tok.pad_token_id), BATCH,
                          workers, drop_last=False)

    return steady_rate(lambda: sum(len(batch["input_ids"]) for batch in loader(paths)))


def steady_rate(one_pass: Callable[[], int]) -> Tuple[float, float]:
    """Samples per second and per process CPU second: the median of PASSES timed passes after
    an untimed one (a training run's loader works with a warm allocator: the first pass of a
    fresh process page-faults in all its memory and ran up to 1.7x slower here)."""
    one_pass()
    wall, cpu = [], []
    for _ in range(PASSES):
        start, cpu_start = time.perf_counter(), time.process_time()
        n = one_pass()
        wall.append(n / (time.perf_counter() - start))
        cpu.append(n / (time.process_time() - cpu_start))
    return statistics.median(wall), statistics.median(cpu)


def worker_main(task: dict) -> dict:
    if task["mode"] == "stages":
        result = stage_worker(task["peer"], task["family"], task["images"], task["passes"])
    else:
        run = hf_pipeline if task["peer"] == "hf" else msmm_pipeline
        wall, cpu = run(task["family"], task["paths"], task["workers"])
        result = {"samples_per_s": wall, "samples_per_cpu_s": cpu}
    assert "mindspore" not in sys.modules, f"{task['peer']} imported mindspore"
    return result


# ----------------------------------------------------------------------------- driver


def run_worker(task: dict) -> dict:
    env = {**os.environ, **ONE_THREAD, **PEERS[task["peer"]]}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{task['peer']} {task['mode']} {task['family']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(runs: List[dict]) -> dict:
    """Key-wise median of nested dicts of numbers."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first if all(k in r for r in runs)}
    return round(statistics.median(runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--per-class", type=int, default=2, help="images per size class (stages)")
    parser.add_argument("--passes", type=int, default=2, help="passes over the images per stages run")
    parser.add_argument("--mixed", type=int, default=48, help="images of random sizes (pipeline)")
    parser.add_argument("--workers", default="0", help="comma-separated loader worker counts (pipeline)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per peer, alternating; medians reported")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "data_pipeline.json"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker_main(json.loads(args.worker))))
        return
    results = {"machine": machine(), "threads": "1 per peer (" + ", ".join(f"{k}={v}" for k, v in ONE_THREAD.items()) + ")",
               "peers": {"hf": "transformers slow image processors", "msmm_pil": "msmm, MSMM_FUSED_KERNELS=0 (PIL resize)",
                         "msmm": "msmm with the resize kernel"},
               "settings": {"per_class": args.per_class, "passes": args.passes, "mixed_images": args.mixed,
                            "repeats": args.repeats, "batch_size": BATCH, "internvl_max_tiles": MAX_TILES,
                            "qwen2vl_max_pixels": QWEN_MAX_PIXELS},
               "stages_ms": {}, "pipeline": []}
    with tempfile.TemporaryDirectory() as folder:
        images = make_images(folder, args.per_class, args.mixed)
        classes = {k: v for k, v in images.items() if k != "mixed"}
        for family in args.families.split(","):
            runs: Dict[str, List[dict]] = {peer: [] for peer in PEERS}
            for _ in range(args.repeats):  # alternating: a shared machine's load hits every peer
                for peer in PEERS:
                    runs[peer].append(run_worker({"mode": "stages", "peer": peer, "family": family, "images": classes,
                                                  "passes": args.passes}))
            table = {peer: median_of(r) for peer, r in runs.items()}
            for size_class in classes:
                hf_total = table["hf"][size_class]["total"]
                table.setdefault("speedup_vs_hf", {})[size_class] = {
                    peer: round(hf_total / table[peer][size_class]["total"], 2) for peer in ("msmm_pil", "msmm")}
            results["stages_ms"][family] = table
            print(family, json.dumps(table["speedup_vs_hf"]), flush=True)
            for workers in (int(w) for w in args.workers.split(",")):
                rates: Dict[str, List[dict]] = {peer: [] for peer in PEERS}
                for _ in range(args.repeats):
                    for peer in PEERS:
                        rates[peer].append(run_worker({"mode": "pipeline", "peer": peer, "family": family,
                                                       "paths": images["mixed"], "workers": workers}))
                row = {"family": family, "workers": workers, "load_average": round(os.getloadavg()[0], 1)}
                for unit in ("samples_per_s", "samples_per_cpu_s") if workers == 0 else ("samples_per_s",):
                    median = {peer: statistics.median(r[unit] for r in runs) for peer, runs in rates.items()}
                    row.update({f"{peer}_{unit}": round(m, 2) for peer, m in median.items()})
                    row.update({f"{peer}_vs_hf_{unit}": round(median[peer] / median["hf"], 2) for peer in ("msmm_pil", "msmm")})
                results["pipeline"].append(row)
                print(json.dumps(row), flush=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
