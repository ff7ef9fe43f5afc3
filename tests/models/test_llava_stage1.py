"""LLaVA-1.5 stage 1 as the seed runs it: model.json sections' ``ckpt_path`` give the CLIP ViT
(OpenAI's TorchScript ``.pt``, read without torch and without running pickled code) and the
Vicuna text decoder (an HF directory whose vocabulary lacks ``<image>``); the projector starts
fresh. The vision tower equals HF CLIPVisionModel's penultimate layer, the text logits HF
Llama's, and training the projector (the only trainable section) lowers the loss."""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from msmm.checkpoint.torch_pickle import TorchPickleError, read_torch_zip
from msmm.models import ModelConfigError, build_model
from msmm.models.model_config import parse_model_config
from msmm.models.section_weights import load_section_weights

VOCAB, IMAGE_TOKEN = 96, 96  # Vicuna's vocabulary has no <image>: the tokenizer adds it as id 96
CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=28,
            patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu")
VICUNA = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, rms_norm_eps=1e-5, max_position_embeddings=64, tie_word_embeddings=False)


# ---- OpenAI's CLIP module tree (names as in its ViT-L-14-336px.pt), filled from an HF CLIP --------

class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, ffn)), ("c_proj", nn.Linear(ffn, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, ffn) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class VisionTransformer(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        width, grid = c["hidden_size"], c["image_size"] // c["patch_size"]
        self.conv1 = nn.Conv2d(3, width, c["patch_size"], c["patch_size"], bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class OpenAICLIP(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.visual = VisionTransformer(c)
        self.token_embedding = nn.Embedding(10, 16)  # the text side, dropped on reading
        self.logit_scale = nn.Parameter(torch.ones([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale


def openai_clip_of(hf: CLIPVisionModel) -> OpenAICLIP:
    """OpenAI's module tree holding ``hf``'s weights (q, k, v packed into in_proj)."""
    src = {k: v.detach() for k, v in hf.vision_model.state_dict().items()}
    clip = OpenAICLIP(CLIP)
    v = clip.visual
    with torch.no_grad():
        v.conv1.weight.copy_(src["embeddings.patch_embedding.weight"])
        v.class_embedding.copy_(src["embeddings.class_embedding"])
        v.positional_embedding.copy_(src["embeddings.position_embedding.weight"])
        for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
            getattr(v, ours).weight.copy_(src[f"{theirs}.weight"])
            getattr(v, ours).bias.copy_(src[f"{theirs}.bias"])
        for i, block in enumerate(v.transformer.resblocks):
            p = f"encoder.layers.{i}."
            for kind in ("weight", "bias"):
                getattr(block.attn, f"in_proj_{kind}").copy_(
                    torch.cat([src[f"{p}self_attn.{q}_proj.{kind}"] for q in "qkv"]))
                getattr(block.attn.out_proj, kind).copy_(src[f"{p}self_attn.out_proj.{kind}"])
                getattr(block.ln_1, kind).copy_(src[f"{p}layer_norm1.{kind}"])
                getattr(block.ln_2, kind).copy_(src[f"{p}layer_norm2.{kind}"])
                getattr(block.mlp.c_fc, kind).copy_(src[f"{p}mlp.fc1.{kind}"])
                getattr(block.mlp.c_proj, kind).copy_(src[f"{p}mlp.fc2.{kind}"])
    return clip


def model_json(clip_path: str, vicuna_path: str) -> dict:
    return {
        "model_id": "llava", "image_token_id": IMAGE_TOKEN,
        "image_encoder": {
            "vision_encoder": {"model_id": "clip_vit", "num_layers": 3, "hidden_size": 32, "num_attention_heads": 2,
                               "ffn_hidden_size": 64, "image_size": 28, "patch_size": 14, "freeze": True,
                               "ckpt_path": clip_path},
            "vision_projector": {"model_id": "mlp", "freeze": False},
        },
        "text_decoder": {"model_id": "llama", "num_layers": 2, "hidden_size": 48, "num_attention_heads": 4,
                         "ffn_hidden_size": 96, "vocab_size": VOCAB + 4, "layernorm_epsilon": 1e-5,
                         "max_position_embeddings": 64, "freeze": True, "ckpt_path": vicuna_path},
    }


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    hf_clip = CLIPVisionModel(CLIPVisionConfig(**CLIP, attn_implementation="eager")).eval()
    with torch.no_grad():  # weights OpenAI's fp16 file holds exactly
        for p in hf_clip.parameters():
            p.copy_(p.half().float() + 0.0)
    clip_path = str(directory / "ViT-tiny-28px.pt")
    torch.jit.script(openai_clip_of(hf_clip).half()).save(clip_path)
    vicuna = LlamaForCausalLM(LlamaConfig(**VICUNA, attn_implementation="eager")).eval()
    vicuna_path = str(directory / "vicuna")
    vicuna.save_pretrained(vicuna_path, safe_serialization=True)
    config = parse_model_config(model_json(clip_path, vicuna_path), "model.json")
    model = build_model(config)
    notes = load_section_weights(model, config)
    return model, config, notes, hf_clip, vicuna, directory


def test_vision_tower_from_openai_clip_pt_equals_hf(stage1):
    model, _, notes, hf_clip, _, _ = stage1
    pixels = torch.tensor(np.random.default_rng(0).normal(size=(2, 3, 28, 28)).astype(np.float32))
    with torch.no_grad():
        ours = model.vision_tower(pixels).numpy()
        ref = hf_clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].numpy()
    err = np.abs(ours - ref).max()
    print("vision max abs err", err)
    assert err <= 1e-5
    assert any(n.startswith("image_encoder.vision_encoder: ") and "ViT-tiny-28px.pt" in n for n in notes)


def test_text_decoder_from_vicuna_with_image_rows_added(stage1):
    model, _, notes, _, vicuna, _ = stage1
    ids = torch.tensor(np.random.default_rng(1).integers(0, VOCAB, size=(2, 9)))
    with torch.no_grad():
        ours = model.language_model(input_ids=ids).numpy()
        ref = vicuna(input_ids=ids).logits.numpy()
    err = np.abs(ours[..., :VOCAB] - ref).max()
    print("text max abs err", err)
    assert err <= 1e-5
    head = model.language_model.lm_head.weight.detach().numpy()
    np.testing.assert_allclose(head[VOCAB:], np.repeat(head[:VOCAB].mean(0, keepdims=True), 4, 0), rtol=1e-6)
    assert any(f"has {VOCAB} rows, the model {VOCAB + 4}: rows {VOCAB}..{VOCAB + 3}" in n for n in notes)


def test_fresh_projector_trains(stage1):
    """Only the projector trains (vision and text frozen in model.json); SGD on a caption lowers the loss."""
    model, _, _, _, _, _ = stage1
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("multi_modal_projector.") for n in trainable)
    rng = np.random.default_rng(2)
    tokens = (28 // 14) ** 2
    ids = torch.tensor(np.concatenate([[1], [IMAGE_TOKEN] * tokens, rng.integers(3, VOCAB, 8)])[None])
    labels = ids.clone()
    labels[:, :1 + tokens] = -100
    pixels = torch.tensor(rng.normal(size=(1, 3, 28, 28)).astype(np.float32))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss, _ = model(input_ids=ids, pixel_values=pixels, labels=labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    print("stage-1 losses", losses)
    assert losses[-1] < losses[0]


def test_section_checkpoint_errors_name_the_key(stage1, tmp_path):
    _, _, _, _, _, directory = stage1
    clip_path, vicuna_path = str(directory / "ViT-tiny-28px.pt"), str(directory / "vicuna")
    raw = model_json(clip_path, vicuna_path)
    raw["image_encoder"]["vision_encoder"]["num_layers"] = 5  # 4 built (penultimate feature), the file holds 3
    config = parse_model_config(raw, "model.json")
    with pytest.raises(ModelConfigError, match=r"model.json: image_encoder.vision_encoder.ckpt_path: .*ViT-tiny-28px"
                                               r".pt lacks 16 of the section's parameters"):
        load_section_weights(build_model(config), config)
    raw = model_json(clip_path, vicuna_path)
    raw["text_decoder"]["layernorm_epsilon"] = 1e-6
    config = parse_model_config(raw, "model.json")
    with pytest.raises(ModelConfigError, match=r"text_decoder.layernorm_epsilon is 1e-06, but .*vicuna/config.json "
                                               r"has rms_norm_eps = 1e-05"):
        load_section_weights(build_model(config), config)
    raw = model_json(clip_path, str(tmp_path / "absent"))
    config = parse_model_config(raw, "model.json")
    with pytest.raises(ModelConfigError, match=r"text_decoder.ckpt_path: .*absent: no such file or directory"):
        load_section_weights(build_model(config), config)


def test_torch_zip_reader_runs_no_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({"w": torch.ones(2), "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(TorchPickleError, match=r"evil.pt: refuses to unpickle posix.system"):
        read_torch_zip(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "ran").exists()
    strided = torch.arange(6.0).reshape(2, 3).t()  # a transposed view: strides, not a copy
    torch.save({"a": strided, "b": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "ok.bin")
    tensors = read_torch_zip(str(tmp_path / "ok.bin"))
    np.testing.assert_array_equal(tensors["a"].numpy(), np.arange(6.0).reshape(2, 3).T)
    assert tensors["b"].dtype == "BF16" and tensors["b"].numpy().tolist() == [1.0, 1.0]
