"""InternViT stochastic depth (``drop_path_rate``), against a torch reference of InternViT's
remote-code layer (``h + drop_path(attn(norm1(h)) * ls1)``, then the MLP branch alike, timm's
per-sample ``DropPath``) built from HF ``InternVLVisionModel``'s own submodules:

* eval mode: the encoder with ``drop_path_rate`` > 0 equals HF (which has no drop path);
* training on torch, with the masks fixed: outputs and gradients equal the reference's;
* training on MindSpore (PyNative and graph): every sample's output is the reference's for
  one of its possible masks (each branch kept and scaled by 1 / (1 - rate), or dropped), and
  both kept and dropped branches occur.
"""
from __future__ import annotations

import itertools
import os
from typing import Dict, List

import mindspore
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from msmm.checkpoint.hf import read_hf_tensors
from msmm.models.pretrained import load_tensors
from msmm.models.vision.drop_path import DropPath, drop_path_rates
from msmm.models.vision.intern_vit import InternVisionEncoder, intern_vit_config_from_hf
from parity_utils import torch_grads
from test_vision_vit import INTERN_300M_STYLE, hf_intern_vit
from vlm_parity_utils import assert_grads

RATE = 0.5
LAYERS = 2  # test_vision_vit's tiny InternViT: rates 0 and 0.5 (layer 0 never drops)


@pytest.fixture(scope="module")
def hf_model():
    return hf_intern_vit(INTERN_300M_STYLE, mean_pooling=True)


@pytest.fixture(scope="module")
def checkpoint(hf_model, tmp_path_factory) -> str:
    path = os.path.join(tmp_path_factory.mktemp("vit"), "vit.safetensors")
    save_file(hf_model.state_dict(), path)
    return path


def ours(hf_model, checkpoint: str) -> InternVisionEncoder:
    config = intern_vit_config_from_hf(dict(hf_model.config.to_dict(), drop_path_rate=RATE))
    model = InternVisionEncoder(config)
    load_tensors(model, read_hf_tensors(checkpoint), checkpoint)
    return model


def reference(hf_model, pixels: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """InternViT's remote-code forward with fixed drop-path masks [layers, 2, N] (0/1)."""
    rates = drop_path_rates(RATE, LAYERS)
    h = hf_model.embeddings(pixels)[0]
    for i, layer in enumerate(hf_model.encoder.layer):
        scale = [torch.tensor(masks[i, b], dtype=torch.float32).reshape(-1, 1, 1) / (1 - rates[i]) for b in (0, 1)]
        h = h + scale[0] * (layer.attention(layer.layernorm_before(h))[0] * layer.lambda_1)
        h = h + scale[1] * (layer.mlp(layer.layernorm_after(h)) * layer.lambda_2)
    return h


def weighted_sum(out: torch.Tensor) -> torch.Tensor:
    return (out * torch.linspace(-1, 1, out.shape[-1])).sum()


def test_rates_rise_linearly_as_torch_linspace():
    assert drop_path_rates(0.4, 5) == pytest.approx(torch.linspace(0, 0.4, 5).tolist())
    assert drop_path_rates(0.4, 1) == [0.0]
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.0"):
        DropPath(1.0)


def test_eval_mode_equals_hf(hf_model, checkpoint, rng):
    pixels = torch.tensor(rng.standard_normal((2, 3, 28, 28)).astype(np.float32))
    model = ours(hf_model, checkpoint).eval()
    with torch.no_grad():
        expected = hf_model.eval()(pixel_values=pixels).last_hidden_state
        np.testing.assert_allclose(model(pixels).numpy(), expected.numpy(), atol=1e-5)


def test_training_with_fixed_masks_equals_reference(hf_model, checkpoint, rng, monkeypatch):
    n = 4
    pixels = torch.tensor(rng.standard_normal((n, 3, 28, 28)).astype(np.float32))
    masks = rng.integers(0, 2, (LAYERS, 2, n)).astype(np.float32)
    masks[0] = 1  # layer 0's rate is 0
    masks[1:, :, 0], masks[1:, :, 1] = 0, 1  # one sample with every branch dropped, one with every kept
    drawn: List[torch.Tensor] = [torch.tensor(masks[i, b]).reshape(n, 1, 1) for i in range(1, LAYERS) for b in (0, 1)]
    monkeypatch.setattr(DropPath, "keep_mask", lambda self, x: drawn.pop(0))
    model = ours(hf_model, checkpoint).train()
    out = model(pixels)
    weighted_sum(out).backward()
    assert not drawn  # one draw per branch of every layer with a rate > 0
    hf_model.zero_grad()
    expected = reference(hf_model, pixels, masks)
    weighted_sum(expected).backward()
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), atol=1e-5)
    err = assert_grads(torch_grads(model), {k: v for k, v in torch_grads(hf_model).items() if "pooler" not in k})
    print("grad rel", err)


def candidates(hf_model, pixels: np.ndarray) -> Dict[tuple, np.ndarray]:
    """The reference output for every mask of the layers that can drop (all samples alike)."""
    n = pixels.shape[0]
    out = {}
    with torch.no_grad():
        for bits in itertools.product((0, 1), repeat=2 * (LAYERS - 1)):
            masks = np.ones((LAYERS, 2, n), np.float32)
            masks[1:] = np.asarray(bits, np.float32).reshape(LAYERS - 1, 2, 1)
            out[bits] = reference(hf_model, torch.tensor(pixels), masks).numpy()
    return out


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_training_on_mindspore_drops_whole_samples(hf_model, checkpoint, mode, rng):
    import ms_backend

    ms = ms_backend.converted_models()
    reference_weights = ours(hf_model, checkpoint)
    model = ms.internvl.InternVisionEncoder(reference_weights.config).train()
    model.load_state_dict({k: ms.torch.tensor(v.detach().numpy()) for k, v in reference_weights.state_dict().items()})
    n = 8
    pixels = rng.standard_normal((n, 3, 28, 28)).astype(np.float32)
    expected = candidates(hf_model, pixels)
    mindspore.set_seed(0)

    def forward(x):
        return model(x)

    with ms_backend.converted_in_sys_modules():
        run = mindspore.jit(forward) if mode == "graph" else forward
        ms_backend._COMPILED.append(run)
        out = run(ms.torch.tensor(pixels)).asnumpy()
    seen = []
    for i in range(n):
        match = [bits for bits, ref in expected.items() if np.allclose(out[i], ref[i], atol=1e-4)]
        assert match, f"sample {i}: the output is no masking of the reference's"
        seen.extend(match[0])
    assert 0 < sum(seen) < len(seen), "expected both kept and dropped branches at rate 0.5 over 8 samples"
