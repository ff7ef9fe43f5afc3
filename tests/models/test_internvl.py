"""InternVL vs HF ``InternVLForConditionalGeneration`` (Qwen2 text), loaded from the same
safetensors; ``image_flags`` vs HF fed only the real tiles; the original remote-code
layout (InternViT packed qkv, ``mlp1``, InternLM2 text) against the HF-native one."""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from msmm.models import from_pretrained
from msmm.models.internvl import InternVL, internvl_config_from_hf
from parity_utils import RunResult, torch_grads
from test_text_decoders import pack_llama_as_internlm2, unpack_internlm2_grads
from vlm_parity_utils import assert_vlm_parity

VOCAB = 128
IMG = VOCAB - 1  # <IMG_CONTEXT>
TILE = 28
TOKENS_PER_TILE = 4  # (28 / 7 patches * 0.5)^2

VISION_VARIANTS = {
    "300m_style": dict(norm_type="layer_norm", attention_bias=True, use_qk_norm=False),
    "6b_style": dict(norm_type="rms_norm", attention_bias=False, use_qk_norm=True),
}
TEXT = dict(
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=96,
    vocab_size=VOCAB,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)

# A sample is a list of items: an int n is n text tokens, ("img", k) an image of k tiles.
Sample = List[Union[int, Tuple[str, int]]]
ONE_IMAGE = [[5, ("img", 2), 6]]
SEVERAL_IMAGES = [[3, ("img", 1), 2, ("img", 2), 4], [2, ("img", 1), 5]]


def make_batch(rng: np.random.Generator, samples: Sequence[Sample]) -> Dict[str, np.ndarray]:
    """Right-padded token ids with TOKENS_PER_TILE image tokens per tile, random tiles,
    labels -100 on image tokens, on the first two tokens and on padding."""
    rows, tiles = [], 0
    for sample in samples:
        ids: List[int] = []
        for item in sample:
            if isinstance(item, int):
                ids += rng.integers(0, IMG, size=item).tolist()
            else:
                ids += [IMG] * (TOKENS_PER_TILE * item[1])
                tiles += item[1]
        rows.append(ids)
    length = max(len(r) for r in rows)
    input_ids = np.zeros((len(rows), length), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        attention_mask[i, : len(r)] = 1
    labels = np.where((input_ids == IMG) | (attention_mask == 0), -100, input_ids)
    labels[:, :2] = -100
    pixel_values = rng.standard_normal((tiles, 3, TILE, TILE)).astype(np.float32)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels, pixel_values=pixel_values)


# ---- reference side: HF transformers -------------------------------------------------------

def hf_internvl(vision_variant: str, text_model_type: str = "qwen2", seed: int = 0):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=[TILE, TILE],
            patch_size=[7, 7],
            **VISION_VARIANTS[vision_variant],
        ),
        text_config=dict(TEXT, model_type=text_model_type),
        image_token_id=IMG,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init: zero class token / position embeddings, unit norms
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


HF_TO_OURS = (
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def hf_name_to_ours(name: str) -> str:
    for old, new in HF_TO_OURS:
        if name.startswith(old):
            return new + name[len(old):]
    raise KeyError(name)


def hf_run(model, batch: Dict[str, np.ndarray]) -> RunResult:
    model.zero_grad()
    out = model(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    grads = {hf_name_to_ours(k): v for k, v in torch_grads(model).items()}
    return RunResult(out.logits.detach().numpy(), float(out.loss.detach()), grads)


# ---- msmm side -------------------------------------------------------------------------------

def msmm_run(model: InternVL, batch: Dict[str, np.ndarray], image_flags=None) -> RunResult:
    model.zero_grad()
    extra = {} if image_flags is None else {"image_flags": torch.tensor(image_flags)}
    loss, logits = model(**{k: torch.tensor(v) for k, v in batch.items()}, **extra)
    loss.backward()
    return RunResult(logits.detach().numpy(), float(loss.detach()), torch_grads(model))


# ---- the original remote-code layout, written from the HF-native one ---------------------------

REMOTE_VISION_NAMES = {  # HF-native name below vision_tower. -> remote-code name below vision_model.
    "embeddings.cls_token": "embeddings.class_embedding",
    "embeddings.position_embeddings": "embeddings.position_embedding",
    "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embedding.weight",
    "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embedding.bias",
}
REMOTE_LAYER_NAMES = {  # below encoder.layer.N. -> below encoder.layers.N.
    "attention.projection_layer": "attn.proj",
    "attention.q_norm": "attn.q_norm",
    "attention.k_norm": "attn.k_norm",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "lambda_1": "ls1",
    "lambda_2": "ls2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
REMOTE_PROJECTOR_NAMES = {"layer_norm": "mlp1.0", "linear_1": "mlp1.1", "linear_2": "mlp1.3"}


def to_remote_layout(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF-native checkpoint tensors -> OpenGVLab remote-code names, q/k/v packed into qkv."""
    out: Dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key.startswith("language_model."):
            out[key] = value
        elif key.startswith("multi_modal_projector."):
            module, param = key[len("multi_modal_projector."):].split(".")
            out[f"{REMOTE_PROJECTOR_NAMES[module]}.{param}"] = value
        elif key[len("vision_tower."):] in REMOTE_VISION_NAMES:
            out["vision_model." + REMOTE_VISION_NAMES[key[len("vision_tower."):]]] = value
        else:
            layer, rest = re.match(r"vision_tower\.encoder\.layer\.(\d+)\.(.+)$", key).groups()
            prefix = f"vision_model.encoder.layers.{layer}."
            qkv = re.match(r"attention\.(q|k|v)_proj\.(weight|bias)$", rest)
            if qkv is None:
                module, param = rest.rsplit(".", 1) if "." in rest else (rest, None)
                name = REMOTE_LAYER_NAMES[module] + ("" if param is None else "." + param)
                out[prefix + name] = value
            elif qkv.group(1) == "q":
                parts = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
                out[prefix + "attn.qkv." + qkv.group(2)] = np.concatenate(parts, axis=0)
    return out


def remote_config(hf_config, llm_config: dict) -> dict:
    vision = hf_config.vision_config
    return {
        "vision_config": {
            "hidden_size": vision.hidden_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size,
            "image_size": vision.image_size[0],
            "patch_size": vision.patch_size[0],
            "qkv_bias": vision.attention_bias,
            "qk_normalization": vision.use_qk_norm,
            "norm_type": vision.norm_type,
            "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": "gelu",
            "drop_path_rate": 0.0,
        },
        "llm_config": llm_config,
        "select_layer": -1,
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "template": "internvl2_5",
    }


def write_remote_checkpoint(directory: str, tensors: Dict[str, np.ndarray], config: dict) -> str:
    os.makedirs(directory, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory


def saved_tensors(directory: str) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


# ---- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "vision_variant,samples",
    [("300m_style", ONE_IMAGE), ("300m_style", SEVERAL_IMAGES), ("6b_style", SEVERAL_IMAGES)],
    ids=["one_image", "several_images", "qk_norm_several_images"],
)
def test_internvl_matches_hf(vision_variant, samples, tmp_path, rng):
    ref_model = hf_internvl(vision_variant)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = make_batch(rng, samples)
    ref = hf_run(ref_model, batch)

    ours = msmm_run(from_pretrained(str(tmp_path)), batch)
    errs = assert_vlm_parity(ours, ref, valid=batch["attention_mask"])
    print(vision_variant, len(samples), errs)


def test_image_flags_skip_padding_tiles(tmp_path, rng):
    """Tiles flagged 0 contribute nothing: equal to HF given only the real tiles."""
    ref_model = hf_internvl("300m_style")
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = make_batch(rng, SEVERAL_IMAGES)
    ref = hf_run(ref_model, batch)

    real = batch["pixel_values"]
    padding = rng.standard_normal((2, 3, TILE, TILE)).astype(np.float32)
    padded = dict(batch, pixel_values=np.concatenate([real[:1], padding[:1], real[1:], padding[1:]]))
    flags = np.array([1, 0] + [1] * (len(real) - 1) + [0])
    ours = msmm_run(from_pretrained(str(tmp_path)), padded, image_flags=flags)
    print("image_flags", assert_vlm_parity(ours, ref, valid=batch["attention_mask"]))


@pytest.mark.parametrize("vision_variant", ["300m_style", "6b_style"])
def test_remote_code_layout_loads_like_hf_native(vision_variant, tmp_path, rng):
    ref_model = hf_internvl(vision_variant)
    native_dir = os.path.join(tmp_path, "native")
    ref_model.save_pretrained(native_dir, safe_serialization=True)
    llm_config = dict(TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    remote_dir = write_remote_checkpoint(
        os.path.join(tmp_path, "remote"),
        to_remote_layout(saved_tensors(native_dir)),
        remote_config(ref_model.config, llm_config),
    )
    assert any(k.endswith("attn.qkv.weight") for k in saved_tensors(remote_dir))

    native, remote = from_pretrained(native_dir), from_pretrained(remote_dir, image_token_id=IMG)
    native_state, remote_state = native.state_dict(), remote.state_dict()
    assert native_state.keys() == remote_state.keys()
    for key in native_state:
        assert torch.equal(native_state[key], remote_state[key]), key
    batch = make_batch(rng, SEVERAL_IMAGES)
    with torch.no_grad():
        inputs = {k: torch.tensor(v) for k, v in batch.items() if k != "labels"}
        np.testing.assert_array_equal(native(**inputs).numpy(), remote(**inputs).numpy())


def test_remote_code_layout_with_internlm2_text(tmp_path, rng):
    """InternVL2-style checkpoint: remote-code vision and mlp1, InternLM2 text (packed wqkv),
    checked against HF InternVL with the equivalent Llama text model."""
    ref_model = hf_internvl("300m_style", text_model_type="llama")
    native_dir = os.path.join(tmp_path, "native")
    ref_model.save_pretrained(native_dir, safe_serialization=True)
    native = saved_tensors(native_dir)
    text = {k[len("language_model."):]: v for k, v in native.items() if k.startswith("language_model.")}
    remote = to_remote_layout({k: v for k, v in native.items() if not k.startswith("language_model.")})
    remote.update({"language_model." + k: v for k, v in pack_llama_as_internlm2(text, TEXT).items()})
    llm_config = dict(TEXT, model_type="internlm2", architectures=["InternLM2ForCausalLM"], bias=False)
    remote_dir = write_remote_checkpoint(
        os.path.join(tmp_path, "remote"), remote, remote_config(ref_model.config, llm_config)
    )
    batch = make_batch(rng, SEVERAL_IMAGES)
    ref = hf_run(ref_model, batch)

    model = from_pretrained(remote_dir, image_token_id=IMG)
    assert model.config.text_family == "internlm2"
    ours = msmm_run(model, batch)
    ours.grads = unpack_internlm2_grads(ours.grads, TEXT)
    print("internlm2 remote", assert_vlm_parity(ours, ref, valid=batch["attention_mask"]))


def test_bad_checkpoints_and_configs_name_the_problem(tmp_path):
    ref_model = hf_internvl("300m_style")
    native_dir = os.path.join(tmp_path, "native")
    ref_model.save_pretrained(native_dir, safe_serialization=True)
    config = remote_config(ref_model.config, dict(TEXT, architectures=["Qwen2ForCausalLM"]))
    with pytest.raises(ValueError, match="image_token_id"):
        internvl_config_from_hf(config)
    with pytest.raises(ValueError, match="not one of"):
        internvl_config_from_hf(dict(config, llm_config={"architectures": ["GPT2LMHeadModel"]}), IMG)

    tensors = to_remote_layout(saved_tensors(native_dir))
    del tensors["mlp1.3.bias"]
    broken = write_remote_checkpoint(os.path.join(tmp_path, "broken"), tensors, config)
    with pytest.raises(KeyError, match=r"multi_modal_projector\.linear_2\.bias"):
        from_pretrained(broken, image_token_id=IMG)
