"""InternViT and CLIP ViT vs HF ``InternVLVisionModel`` / ``CLIPVisionModel``, pixel
shuffle vs HF's, and the static-shape feature splice vs boolean-mask indexing."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from msmm.models.projectors import pixel_shuffle
from msmm.models.vision.clip_vit import CLIPVisionEncoder, clip_vit_config_from_hf
from msmm.models.vision.intern_vit import InternVisionEncoder, intern_vit_config_from_hf
from msmm.checkpoint.hf import read_hf_tensors
from msmm.checkpoint.names import to_mm
from msmm.models.pretrained import load_tensors
from msmm.models.vlm import splice_features
from parity_utils import torch_grads
from vlm_parity_utils import assert_grads

INTERN_300M_STYLE = dict(norm_type="layer_norm", attention_bias=True, use_qk_norm=False)
INTERN_6B_STYLE = dict(norm_type="rms_norm", attention_bias=False, use_qk_norm=True)
VISION_BASE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its init (zero class token and position embeddings, unit
    norms, constant layer scales) so that each one shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def compare(ours_out, ref_out, ours_model, ref_grads, name_map) -> dict:
    """Asserts outputs (max abs 1e-5) and gradients (rel 1e-4) equal; returns the errors."""
    out_err = float(np.abs(ours_out - ref_out).max())
    assert out_err <= 1e-5, out_err
    grad_err = assert_grads({name_map(k): v for k, v in torch_grads(ours_model).items()}, ref_grads)
    return {"out_abs": out_err, "grad_rel": grad_err}


# ---- InternViT -------------------------------------------------------------------------------

def hf_intern_vit(variant: dict, mean_pooling: bool):
    from transformers import InternVLVisionConfig, InternVLVisionModel

    config = InternVLVisionConfig(
        **VISION_BASE, **variant, image_size=[28, 28], patch_size=[7, 7], use_mean_pooling=mean_pooling,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = InternVLVisionModel(config).float()
    perturb(model)
    return model


def hf_intern_vit_run(model, pixels: np.ndarray):
    model.zero_grad()
    out = model(pixel_values=torch.tensor(pixels)).last_hidden_state
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach().numpy(), torch_grads(model)


def msmm_intern_vit_run(hf_vision_config: dict, checkpoint: str, pixels: np.ndarray):
    model = InternVisionEncoder(intern_vit_config_from_hf(hf_vision_config))
    load_tensors(model, read_hf_tensors(checkpoint), checkpoint)
    out = model(torch.tensor(pixels))
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach().numpy(), model


@pytest.mark.parametrize("variant", [INTERN_300M_STYLE, INTERN_6B_STYLE], ids=["300m_style", "6b_qk_norm"])
@pytest.mark.parametrize(
    "size,mean_pooling", [(28, True), (42, False)], ids=["trained_size", "resized_pos_embed_final_norm"]
)
def test_intern_vit_matches_hf(variant, size, mean_pooling, tmp_path, rng):
    ref_model = hf_intern_vit(variant, mean_pooling)
    path = os.path.join(tmp_path, "vit.safetensors")
    save_file(ref_model.state_dict(), path)
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    ref_out, ref_grads = hf_intern_vit_run(ref_model, pixels)

    ours_out, ours_model = msmm_intern_vit_run(ref_model.config.to_dict(), path, pixels)
    print(variant, size, compare(ours_out, ref_out, ours_model, ref_grads, lambda k: k))


def test_qk_norm_is_rmsnorm_over_all_heads(rng):
    """InternViT-6B's QK-norm, checked against the formula: q / rms(q over all heads) * w."""
    from msmm.models.vision.intern_vit import InternVisionAttention

    config = intern_vit_config_from_hf(dict(VISION_BASE, **INTERN_6B_STYLE, image_size=28, patch_size=7))
    attn = InternVisionAttention(config.transformer_config(), qk_layernorm=True)
    perturb(attn)
    x = torch.tensor(rng.standard_normal((2, 5, 32)).astype(np.float32))
    q, k, _ = attn.project_qkv(x)
    raw_q = x @ attn.q_proj.weight.T
    expected = raw_q / torch.sqrt((raw_q**2).mean(-1, keepdim=True) + 1e-6) * attn.q_norm.weight
    assert float((q - expected).abs().max().detach()) < 1e-5
    assert k.shape == q.shape


# ---- CLIP ------------------------------------------------------------------------------------

def hf_clip(feature_layer: int):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        **VISION_BASE, image_size=28, patch_size=7, projection_dim=16, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = CLIPVisionModel(config).float()
    perturb(model)
    return model


def hf_clip_run(model, pixels: np.ndarray, feature_layer: int):
    model.zero_grad()
    size = pixels.shape[-1]
    out = model(
        pixel_values=torch.tensor(pixels), output_hidden_states=True, interpolate_pos_encoding=size != 28
    ).hidden_states[feature_layer]
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach().numpy(), torch_grads(model)


def msmm_clip_run(hf_vision_config: dict, checkpoint: str, pixels: np.ndarray, feature_layer: int):
    config = clip_vit_config_from_hf(hf_vision_config, feature_layer)
    model = CLIPVisionEncoder(config)
    unused = "|".join([r"post_layernorm\."] + [rf"encoder\.layers\.{i}\." for i in range(config.layers_used, 2)])
    tensors = to_mm(read_hf_tensors(checkpoint), [("vision_model.", "", [])], [], strict=False)
    load_tensors(model, tensors, checkpoint, unused=re.compile(rf"^({unused})"))
    out = model(torch.tensor(pixels))
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach().numpy(), model


@pytest.mark.parametrize("feature_layer,size", [(-2, 28), (-1, 28), (1, 42), (0, 28)])
def test_clip_vit_matches_hf(feature_layer, size, tmp_path, rng):
    ref_model = hf_clip(feature_layer)
    path = os.path.join(tmp_path, "clip.safetensors")
    save_file(ref_model.state_dict(), path)
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    ref_out, ref_grads = hf_clip_run(ref_model, pixels, feature_layer)

    ours_out, ours_model = msmm_clip_run(ref_model.config.to_dict(), path, pixels, feature_layer)
    errs = compare(ours_out, ref_out, ours_model, ref_grads, lambda k: "vision_model." + k)
    print(feature_layer, size, errs)


# ---- pixel shuffle, splice -------------------------------------------------------------------

def test_pixel_shuffle_matches_hf(rng):
    from transformers.models.internvl.modeling_internvl import InternVLModel

    x = torch.tensor(rng.standard_normal((3, 4, 4, 8)).astype(np.float32))
    ref = InternVLModel.pixel_shuffle(None, x, scale_factor=0.5)
    ours = pixel_shuffle(x, 0.5, "v2")
    assert ours.shape == (3, 2, 2, 32)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    # every output vector holds exactly the 4 inputs of one 2x2 block
    block = x[0, 2:4, 0:2].reshape(-1).sort().values
    np.testing.assert_array_equal(ours[0, 1, 0].sort().values.numpy(), block.numpy())
    # v1 differs from v2 by a transpose of the output grid
    np.testing.assert_array_equal(pixel_shuffle(x, 0.5, "v1").numpy(), ours.permute(0, 2, 1, 3).numpy())
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(x[:, :3, :3], 0.5)


@pytest.mark.parametrize("flags", [None, [1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 0]])
def test_splice_matches_mask_indexing(flags, rng):
    """The static-shape splice equals InternVL's: drop tiles with flag 0, then assign the
    remaining feature rows in order to the image-token positions (boolean indexing)."""
    n, t, h, b, l = 4, 3, 5, 2, 10
    flags_np = np.ones(n, dtype=np.int64) if flags is None else np.array(flags)
    slots = np.zeros((b, l), dtype=bool)
    positions = rng.choice(b * l, size=int(flags_np.sum()) * t, replace=False)
    slots.reshape(-1)[np.sort(positions)] = True
    embeds = rng.standard_normal((b, l, h)).astype(np.float32)
    features = rng.standard_normal((n, t, h)).astype(np.float32)

    expected = embeds.copy()
    expected[slots] = features[flags_np == 1].reshape(-1, h)
    flag_tensor = None if flags is None else torch.tensor(flags_np)
    ours = splice_features(torch.tensor(embeds), torch.tensor(slots), torch.tensor(features), flag_tensor)
    np.testing.assert_array_equal(ours.numpy(), expected)
