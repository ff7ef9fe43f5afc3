"""Everything the quickstart trains on, generated (nothing downloaded):

- a synthetic visual question-answering set of coloured shapes on a plain background, in
  InternVL jsonl (``train.jsonl``, ``heldout.jsonl``: different images, ``images/{split}_{i}.png``),
  alternating one shape asked "What colour is the circle?" -> "red" and two shapes side by
  side asked "Which shape is on the left?" -> "triangle";
- a byte-level BPE tokenizer trained on that text, in which every answer is one token;
- a tiny InternVL in HF format (``transformers.InternVLForConditionalGeneration``, HF-native
  layout: InternViT, pixel-shuffle MLP, Qwen2 text), randomly initialised, in ``hf/``;
- the matching ``model.json`` and ``data.json`` for ``msmm-train``.

    python examples/quickstart/make_quickstart_assets.py --out out/quickstart
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (235, 235, 235)
IMAGE_SIZE = 56  # one InternVL tile
PATCH_SIZE = 7  # 8 x 8 patches -> 16 image tokens after the 0.5 pixel shuffle
SYSTEM = "You are a helpful assistant."
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]


def colour_question(shape: str) -> str:
    return f"What colour is the {shape}?"


LEFT_QUESTION = "Which shape is on the left?"


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple, colour: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def make_scene(rng: np.random.Generator, count: int) -> tuple[Image.Image, list[tuple[str, str]]]:
    """``count`` (1 or 2) different shapes in different colours, one in each of ``count``
    vertical bands, roughly centred there (a single shape 32-44 px, two shapes 24-27 px in
    their 28 px bands: at 20-24 px, three 7 px patches across, the model mixed up small
    triangles, circles and squares); returns the image and its (shape, colour) pairs from left
    to right."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    shapes = rng.choice(SHAPES, size=count, replace=False)
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    band = IMAGE_SIZE // count
    for k, (shape, colour) in enumerate(zip(shapes, colours)):
        size = int(rng.integers(24, 28)) if count == 2 else int(rng.integers(32, 45))
        x = k * band + (band - size) // 2 + int(rng.integers(-(band - size) // 2, (band - size) // 2 + 1))
        y = (IMAGE_SIZE - size) // 2 + int(rng.integers(-3, 4))
        draw_shape(draw, str(shape), (x, y, x + size - 1, y + size - 1), COLOURS[str(colour)])
    return image, [(str(s), str(c)) for s, c in zip(shapes, colours)]


def write_split(out: str, split: str, images: int, rng: np.random.Generator) -> str:
    """``images`` scenes, one question each, alternating: one shape, asked its colour; two
    shapes, asked which is on the left."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    path = os.path.join(out, f"{split}.jsonl")
    with open(path, "w") as f:
        for i in range(images):
            count = 1 + i % 2
            image, objects = make_scene(rng, count)
            name = f"images/{split}_{i}.png"
            image.save(os.path.join(out, name))
            question, answer = (colour_question(objects[0][0]), objects[0][1]) if count == 1 \
                else (LEFT_QUESTION, objects[0][0])
            f.write(json.dumps({"id": i, "image": name, "conversations": [
                {"from": "system", "value": SYSTEM},
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": answer}]}) + "\n")
    return path


def write_tokenizer(directory: str):
    """Byte-level BPE over the questions and answers; every answer word must be one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    corpus = [SYSTEM, LEFT_QUESTION] + [colour_question(s) for s in SHAPES] + list(COLOURS) + list(SHAPES)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 8, trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token=SPECIALS[0],
                              additional_special_tokens=SPECIALS[1:])
    for word in list(COLOURS) + list(SHAPES):
        if len(fast(word)["input_ids"]) != 1:
            raise RuntimeError(f"tokenizer: answer {word!r} is not a single token")
    fast.save_pretrained(directory)
    return fast


def write_hf_model(directory: str, tokenizer, seed: int = 0) -> dict:
    """A tiny random InternVL, saved with ``save_pretrained``; returns its config.json dict."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH_SIZE, PATCH_SIZE],
                           norm_type="layer_norm", attention_bias=True, use_qk_norm=False, layer_norm_eps=1e-6,
                           hidden_act="gelu", use_mean_pooling=True),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
                         tie_word_embeddings=False),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
        vision_feature_layer=-1, tie_word_embeddings=False)
    torch.manual_seed(seed)
    InternVLForConditionalGeneration(config).float().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


def model_json(hf: dict) -> dict:
    """The msmm model.json of the HF config above; everything trains (nothing frozen)."""
    v, t = hf["vision_config"], hf["text_config"]
    return {
        "model_id": "internvl",
        "image_token_id": hf["image_token_id"],
        "image_encoder": {
            "vision_encoder": {"model_id": "intern_vit", "num_layers": v["num_hidden_layers"],
                               "hidden_size": v["hidden_size"], "num_attention_heads": v["num_attention_heads"],
                               "ffn_hidden_size": v["intermediate_size"], "image_size": IMAGE_SIZE,
                               "patch_size": PATCH_SIZE, "feature_layer": -1, "freeze": False},
            "vision_projector": {"model_id": "pixel_shuffle_mlp", "downsample_ratio": 0.5, "ps_version": "v2",
                                 "freeze": False},
        },
        "text_decoder": {"model_id": "qwen2", "num_layers": t["num_hidden_layers"], "hidden_size": t["hidden_size"],
                         "num_attention_heads": t["num_attention_heads"], "num_query_groups": t["num_key_value_heads"],
                         "ffn_hidden_size": t["intermediate_size"], "vocab_size": t["vocab_size"],
                         "add_qkv_bias": True, "rotary_base": t["rope_theta"], "freeze": False},
    }


def data_json(out: str, annotation: str) -> dict:
    return {
        "dataset_param": {
            "dataset_type": "multimodal",
            "basic_parameters": {"template_name": "internvl2_5", "data_path": annotation, "data_folder": out,
                                 "cutoff_len": 64},
            "tokenizer_config": {"from_pretrained": os.path.join(out, "hf")},
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "downsample_ratio": 0.5,
            "dynamic_image_size": False, "use_thumbnail": False, "min_dynamic_patch": 1, "max_dynamic_patch": 1,
        },
        "dataloader_param": {"shuffle": True, "drop_last": True, "num_workers": 0, "seed": 1234,
                             "collate_param": {"model_name": "internvl"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/quickstart")
    parser.add_argument("--train-images", type=int, default=2400)
    parser.add_argument("--heldout-images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="seed of the images (training and held-out)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    train = write_split(out, "train", args.train_images, rng)
    write_split(out, "heldout", args.heldout_images, rng)
    tokenizer = write_tokenizer(os.path.join(out, "hf"))
    hf = write_hf_model(os.path.join(out, "hf"), tokenizer)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(model_json(hf), f, indent=2)
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(data_json(out, train), f, indent=2)
    print(f"quickstart assets in {out}: {args.train_images} training and {args.heldout_images} held-out "
          f"questions, tiny InternVL (HF format) in {out}/hf")


if __name__ == "__main__":
    main()
