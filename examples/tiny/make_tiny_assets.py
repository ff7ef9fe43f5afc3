"""Write a tiny, self-contained training setup for CPU runs: a BPE tokenizer trained in a
second (with the model family's special tokens), a handful of generated images, an
annotation file in the family's seed format, and the matching model.json / data.json.

    python examples/tiny/make_tiny_assets.py --family qwen2vl --out tiny_assets

Families: ``qwen2vl`` (mllm-format json, Qwen2-VL fine-tuning), ``internvl`` (InternVL
jsonl, InternVL2.5-style fine-tuning with Qwen2 text, one 56 px tile per image) and
``llava`` (LLaVA-Pretrain json, ``plain`` template, projector-only pre-training).

``--hf-model`` also writes ``hf/``: a random-weight HF checkpoint of the same architecture
(config.json, safetensors, tokenizer, preprocessor_config.json with the data.json's image
settings) that ``msmm-serve``, ``msmm-infer`` and ``msmm-eval`` load. It is built with
transformers on real torch (the ``test`` extra).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
INTERNVL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<image>"]
# family -> (special tokens, the first is the pad token; eos; bos)
TOKENS = {
    "qwen2vl": (QWEN2_SPECIALS, "<|im_end|>", None),
    "internvl": (INTERNVL_SPECIALS, "<|im_end|>", None),
    "llava": (LLAVA_SPECIALS, "</s>", "<s>"),
}
CORPUS = ["You are a helpful assistant.", "What colour is the square in the picture?",
          "The square is red.", "The square is green.", "The square is blue.", "Describe the image.",
          "A small coloured square on a grey background."]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def write_tokenizer(directory: str, family: str = "qwen2vl") -> dict:
    """A byte-level BPE tokenizer with the family's special tokens; returns their ids and the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    specials, eos, bos = TOKENS[family]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=bos, pad_token=specials[0],
                              additional_special_tokens=specials[1:])
    fast.save_pretrained(directory)
    return {t: fast.convert_tokens_to_ids(t) for t in specials} | {"vocab_size": len(fast)}


def write_images(directory: str, samples: int, rng: np.random.Generator) -> list:
    """``images/{i}.png``: a coloured 28 px square at a random place on grey; returns the colour names."""
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    names = []
    for i in range(samples):
        name = list(COLOURS)[i % len(COLOURS)]
        image = np.full((56, 56, 3), 128, np.uint8)
        x, y = rng.integers(0, 28, size=2)
        image[y:y + 28, x:x + 28] = COLOURS[name]
        Image.fromarray(image).save(os.path.join(directory, "images", f"{i}.png"))
        names.append(name)
    return names


def write_data(directory: str, samples: int, rng: np.random.Generator, family: str = "qwen2vl") -> str:
    """The annotation file in the family's seed format: mllm json (Qwen2-VL), InternVL
    jsonl (``conversations``), LLaVA-Pretrain json (image + caption)."""
    names = write_images(directory, samples, rng)
    question = "What colour is the square in the picture?"
    if family == "qwen2vl":
        records = [{"messages": [{"role": "user", "content": f"<image>{question}"},
                                 {"role": "assistant", "content": f"The square is {name}."}],
                    "images": [f"images/{i}.png"]} for i, name in enumerate(names)]
        path = os.path.join(directory, "train.json")
        with open(path, "w") as f:
            json.dump(records, f, indent=1)
        return path
    if family == "internvl":
        path = os.path.join(directory, "train.jsonl")
        with open(path, "w") as f:
            for i, name in enumerate(names):
                f.write(json.dumps({"id": i, "image": f"images/{i}.png", "conversations": [
                    {"from": "system", "value": "You are a helpful assistant."},
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": f"The square is {name}."}]}) + "\n")
        return path
    records = [{"id": str(i), "image": f"images/{i}.png", "conversations": [
        {"from": "human", "value": "<image>\n"},
        {"from": "gpt", "value": f"A small {name} square on a grey background."}]} for i, name in enumerate(names)]
    path = os.path.join(directory, "blip_laion_cc_sub_tiny.json")
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
    return path


def qwen2vl_model_json(ids: dict) -> dict:
    vocab = ids["vocab_size"]
    return {
        "model_id": "qwen2_vl",
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "image_encoder": {
            "vision_encoder": {"model_id": "qwen2_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                               "ffn_hidden_size": 64, "patch_size": 14, "freeze": True},
            "vision_projector": {"model_id": "patch_merger", "freeze": False},
        },
        "text_decoder": {"model_id": "qwen2", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                         "num_query_groups": 2, "ffn_hidden_size": 128, "vocab_size": vocab, "add_qkv_bias": True,
                         "rotary_base": 10000.0, "mrope_section": [2, 3, 3], "freeze": False},
    }


def qwen2vl_data_json(directory: str, annotation: str) -> dict:
    return {
        "dataset_param": {
            "dataset_type": "huggingface",
            "preprocess_parameters": {"model_name_or_path": os.path.join(directory, "tokenizer"),
                                      "image_min_pixels": 3136, "image_max_pixels": 3136,
                                      "video_min_pixels": 3136, "video_max_pixels": 3136},
            "basic_parameters": {"template": "qwen2vl", "dataset_dir": directory, "dataset": annotation,
                                 "cutoff_len": 128},
            "tokenizer_config": {"from_pretrained": os.path.join(directory, "tokenizer")},
        },
        "dataloader_param": {"shuffle": True, "drop_last": True, "num_workers": 0, "seed": 1234},
    }


def internvl_model_json(ids: dict) -> dict:
    return {
        "model_id": "internvl",
        "image_token_id": ids["<IMG_CONTEXT>"],
        "image_encoder": {
            "vision_encoder": {"model_id": "intern_vit", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                               "ffn_hidden_size": 64, "image_size": 56, "patch_size": 14, "freeze": True},
            "vision_projector": {"model_id": "pixel_shuffle_mlp", "downsample_ratio": 0.5, "ps_version": "v2",
                                 "freeze": False},
        },
        "text_decoder": {"model_id": "qwen2", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                         "num_query_groups": 2, "ffn_hidden_size": 128, "vocab_size": ids["vocab_size"],
                         "add_qkv_bias": True, "rotary_base": 10000.0, "freeze": False},
    }


def internvl_data_json(directory: str, annotation: str) -> dict:
    """MindSpeed-MM's InternVL layout: one 56 px tile per image (no dynamic tiling), 4 tokens a tile."""
    return {
        "dataset_param": {
            "dataset_type": "multimodal",
            "basic_parameters": {"template_name": "internvl2_5", "data_path": annotation, "data_folder": directory,
                                 "cutoff_len": 128},
            "tokenizer_config": {"from_pretrained": os.path.join(directory, "tokenizer")},
            "image_size": 56, "patch_size": 14, "downsample_ratio": 0.5,
            "dynamic_image_size": False, "use_thumbnail": False, "min_dynamic_patch": 1, "max_dynamic_patch": 1,
        },
        "dataloader_param": {"shuffle": True, "drop_last": True, "num_workers": 0, "seed": 1234,
                             "collate_param": {"model_name": "internvl"}},
    }


def llava_model_json(ids: dict) -> dict:
    """LLaVA-1.5 pre-training: CLIP and the LLM frozen, only the projector learns."""
    return {
        "model_id": "llava",
        "image_token_id": ids["<image>"],
        "image_encoder": {
            "vision_encoder": {"model_id": "clip_vit", "num_layers": 3, "hidden_size": 32, "num_attention_heads": 4,
                               "ffn_hidden_size": 64, "image_size": 56, "patch_size": 14, "feature_layer": -2,
                               "freeze": True},
            "vision_projector": {"model_id": "mlp", "freeze": False},
        },
        "text_decoder": {"model_id": "llama", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                         "num_query_groups": 2, "ffn_hidden_size": 128, "vocab_size": ids["vocab_size"],
                         "rotary_base": 10000.0, "freeze": True},
    }


def llava_data_json(directory: str, annotation: str) -> dict:
    """MindSpeed-MM's LLaVA layout: ``plain`` template (image, then the learned caption), 56 px crops."""
    return {
        "dataset_param": {
            "dataset_type": "multimodal",
            "basic_parameters": {"template_name": "plain", "data_path": annotation, "data_folder": directory,
                                 "cutoff_len": 64},
            "tokenizer_config": {"from_pretrained": os.path.join(directory, "tokenizer")},
            "crop_size": 56, "patch_size": 14,
        },
        "dataloader_param": {"shuffle": True, "drop_last": True, "num_workers": 0, "seed": 1234,
                             "collate_param": {"model_name": "llava"}},
    }


# LoRA on the InternViT (XTuner's visual_encoder_lora targets: attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
# here in msmm's names); LoRA on the text decoder comes from msmm-train's --lora-* arguments
VISION_LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
               "target_modules": ["q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2"]}


def add_vision_lora(model_json: dict, dropout: float) -> dict:
    model_json["image_encoder"]["vision_encoder"]["lora"] = dict(VISION_LORA, lora_dropout=dropout)
    return model_json


HF_CONTEXT = 1024  # max_position_embeddings of the tiny HF models
QWEN2VL_PIXELS = 56 * 56  # the data.json's image (and video) min_pixels = max_pixels


def _text_hf_config(text: dict, model_type: str) -> dict:
    """The HF text config of a model.json ``text_decoder`` block."""
    return dict(model_type=model_type, vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
                intermediate_size=text["ffn_hidden_size"], num_hidden_layers=text["num_layers"],
                num_attention_heads=text["num_attention_heads"], num_key_value_heads=text["num_query_groups"],
                max_position_embeddings=HF_CONTEXT, rms_norm_eps=1e-6, rope_theta=text["rotary_base"],
                tie_word_embeddings=False)


def hf_model(family: str, model_json: dict):
    """(the random-weight transformers model of ``model_json``'s architecture, its image processor)."""
    import transformers as tf

    vision, text = model_json["image_encoder"]["vision_encoder"], model_json["text_decoder"]
    if family == "qwen2vl":
        text_config = dict(_text_hf_config(text, "qwen2_vl_text"),
                           rope_scaling={"type": "mrope", "mrope_section": text["mrope_section"]})
        config = tf.Qwen2VLConfig(
            text_config=text_config, vocab_size=text["vocab_size"], image_token_id=model_json["image_token_id"],
            video_token_id=model_json["video_token_id"], vision_start_token_id=model_json["vision_start_token_id"],
            vision_config=dict(depth=vision["num_layers"], embed_dim=vision["hidden_size"],
                               hidden_size=text["hidden_size"], num_heads=vision["num_attention_heads"],
                               mlp_ratio=vision["ffn_hidden_size"] // vision["hidden_size"],
                               patch_size=vision["patch_size"], spatial_merge_size=2, temporal_patch_size=2),
            tie_word_embeddings=False)
        processor = tf.Qwen2VLImageProcessor(min_pixels=QWEN2VL_PIXELS, max_pixels=QWEN2VL_PIXELS,
                                             patch_size=vision["patch_size"])
        return tf.Qwen2VLForConditionalGeneration(config), processor
    size = vision["image_size"]
    if family == "internvl":
        config = tf.InternVLConfig(
            vision_config=dict(hidden_size=vision["hidden_size"], num_hidden_layers=vision["num_layers"],
                               num_attention_heads=vision["num_attention_heads"],
                               intermediate_size=vision["ffn_hidden_size"], image_size=[size, size],
                               patch_size=[vision["patch_size"]] * 2, norm_type="layer_norm", attention_bias=True,
                               use_qk_norm=False, layer_norm_eps=1e-6, hidden_act="gelu", use_mean_pooling=True),
            text_config=_text_hf_config(text, "qwen2"), image_token_id=model_json["image_token_id"],
            downsample_ratio=0.5, vision_feature_layer=-1, tie_word_embeddings=False)
        # one tile per image, as the data.json (dynamic_image_size false)
        processor = tf.GotOcr2ImageProcessor(size={"height": size, "width": size}, crop_to_patches=False,
                                             max_patches=1)
        return tf.InternVLForConditionalGeneration(config), processor
    config = tf.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=vision["hidden_size"],
                           num_hidden_layers=vision["num_layers"], num_attention_heads=vision["num_attention_heads"],
                           intermediate_size=vision["ffn_hidden_size"], image_size=size,
                           patch_size=vision["patch_size"], projection_dim=16),
        text_config=_text_hf_config(text, "llama"), image_token_index=model_json["image_token_id"],
        vision_feature_layer=vision["feature_layer"], tie_word_embeddings=False)
    processor = tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return tf.LlavaForConditionalGeneration(config), processor


def write_hf_model(directory: str, family: str, model_json: dict, tokenizer_dir: str, seed: int = 0) -> None:
    """``directory``: the random-weight HF checkpoint of ``model_json`` (weights off the init by
    N(0, 0.1) so greedy answers are not near-ties), the tokenizer of ``tokenizer_dir``, the
    image processor's config."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    model, processor = hf_model(family, model_json)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    model.float().save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    processor.save_pretrained(directory)
    if family == "qwen2vl":  # HF's video processor needs torchvision to be built: its config written as it saves it
        with open(os.path.join(directory, "video_preprocessor_config.json"), "w") as f:
            json.dump({"video_processor_type": "Qwen2VLVideoProcessor", "min_pixels": QWEN2VL_PIXELS,
                       "max_pixels": QWEN2VL_PIXELS, "patch_size": model_json["image_encoder"]["vision_encoder"][
                           "patch_size"], "temporal_patch_size": 2, "merge_size": 2}, f, indent=2)


FAMILIES = {
    "qwen2vl": (qwen2vl_model_json, qwen2vl_data_json),
    "internvl": (internvl_model_json, internvl_data_json),
    "llava": (llava_model_json, llava_data_json),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="qwen2vl")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--vision-lora", action="store_true", help="add a lora block to the vision encoder (internvl)")
    parser.add_argument("--vision-lora-dropout", type=float, default=VISION_LORA["lora_dropout"])
    parser.add_argument("--missing-images", type=int, default=0,
                        help="append records whose image does not exist (bad input, for the bad-input tests)")
    parser.add_argument("--strict", action="store_true", help="data.json: stop at the first bad input")
    parser.add_argument("--packing", action="store_true", help="data.json: pack the samples into cutoff_len rows")
    parser.add_argument("--val-rate", type=float, help="data.json: hold out this share of the records for validation")
    parser.add_argument("--text-layers", type=int, help="text decoder layers (default 2; e.g. 4 for PP 2 x VPP 2)")
    parser.add_argument("--vision-heads", type=int,
                        help="vision encoder heads of 8 dims each (default 4; e.g. 3 for unaligned TP 2)")
    parser.add_argument("--train-vision", action="store_true", help="train the vision encoder (frozen by default)")
    parser.add_argument("--vision-pipeline-layers", type=json.loads,
                        help="image_encoder.vision_encoder.pipeline_num_layers, JSON (e.g. [1,1])")
    parser.add_argument("--text-pipeline-layers", type=json.loads,
                        help="text_decoder.pipeline_num_layers, JSON (e.g. [1,3] or [[1,1],[1,1]])")
    parser.add_argument("--hf-model", action="store_true",
                        help="also write hf/: a random-weight HF checkpoint of model.json (needs torch)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    ids = write_tokenizer(os.path.join(out, "tokenizer"), args.family)
    annotation = write_data(out, args.samples, np.random.default_rng(0), args.family)
    if args.missing_images:
        if args.family != "internvl":
            parser.error("--missing-images: only for --family internvl (a jsonl annotation file)")
        with open(annotation, "a") as f:
            for k in range(args.missing_images):
                f.write(json.dumps({"id": f"missing{k}", "image": f"images/missing_{k}.png", "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the square in the picture?"},
                    {"from": "gpt", "value": "The square is red."}]}) + "\n")
    model_json, data_json = FAMILIES[args.family]
    model = model_json(ids)
    if args.vision_lora:
        if args.family != "internvl":
            parser.error("--vision-lora: only for --family internvl")
        model = add_vision_lora(model, args.vision_lora_dropout)
    if args.text_layers is not None:
        model["text_decoder"]["num_layers"] = args.text_layers
    vision = model["image_encoder"]["vision_encoder"]
    if args.vision_heads is not None:
        vision.update(num_attention_heads=args.vision_heads, hidden_size=8 * args.vision_heads)
    if args.train_vision:
        vision["freeze"] = False
    if args.text_pipeline_layers is not None:
        model["text_decoder"]["pipeline_num_layers"] = args.text_pipeline_layers
    if args.vision_pipeline_layers is not None:
        model["image_encoder"]["vision_encoder"]["pipeline_num_layers"] = args.vision_pipeline_layers
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(model, f, indent=2)
    with open(os.path.join(out, "data.json"), "w") as f:
        data = data_json(out, annotation)
        data["dataset_param"]["basic_parameters"]["strict"] = args.strict
        data["dataloader_param"]["packing"] = args.packing
        if args.val_rate is not None:
            data["dataset_param"]["basic_parameters"]["val_rate"] = args.val_rate
        json.dump(data, f, indent=2)
    if args.hf_model:
        write_hf_model(os.path.join(out, "hf"), args.family, model, os.path.join(out, "tokenizer"))
    print(f"tiny {args.family} assets in {out}" + (f" (HF checkpoint in {out}/hf)" if args.hf_model else ""))


if __name__ == "__main__":
    main()
