"""LLaVA-1.5 vs HF ``LlavaForConditionalGeneration`` (CLIP ViT, Llama text), loaded from the
same safetensors, with one image and with several images over a padded batch."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import pytest
import torch

from msmm.models import from_pretrained
from msmm.models.llava import Llava, llava_config_from_hf
from parity_utils import RunResult, torch_grads
from vlm_parity_utils import assert_vlm_parity

VOCAB = 128
IMAGE = VOCAB - 1  # <image>
SIZE = 28
TEXT = dict(
    model_type="llama",
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=96,
    vocab_size=VOCAB,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# A sample is a list of items: an int n is n text tokens, "img" one image.
Sample = List[Union[int, str]]
ONE_IMAGE = [[4, "img", 6]]
SEVERAL_IMAGES = [[3, "img", 2, "img", 4], [2, "img", 5]]


def tokens_per_image(strategy: str) -> int:
    return (SIZE // 7) ** 2 + (strategy == "full")


def make_batch(rng: np.random.Generator, samples: Sequence[Sample], strategy: str) -> Dict[str, np.ndarray]:
    """Right-padded ids, random images, labels -100 on image tokens, the first two tokens, padding."""
    rows, images = [], 0
    for sample in samples:
        ids: List[int] = []
        for item in sample:
            if item == "img":
                ids += [IMAGE] * tokens_per_image(strategy)
                images += 1
            else:
                ids += rng.integers(0, IMAGE, size=item).tolist()
        rows.append(ids)
    length = max(len(r) for r in rows)
    input_ids = np.zeros((len(rows), length), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        attention_mask[i, : len(r)] = 1
    labels = np.where((input_ids == IMAGE) | (attention_mask == 0), -100, input_ids)
    labels[:, :2] = -100
    pixel_values = rng.standard_normal((images, 3, SIZE, SIZE)).astype(np.float32)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels, pixel_values=pixel_values)


# ---- reference side: HF transformers -------------------------------------------------------

def hf_llava(feature_layer: int = -2, strategy: str = "default", seed: int = 0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=SIZE,
            patch_size=7,
            projection_dim=16,
        ),
        text_config=dict(TEXT),
        image_token_index=IMAGE,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # off the init: unit norms, zero biases
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


HF_TO_OURS = (
    ("model.vision_tower.vision_model.", "vision_tower."),
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
    """Parameters that do not reach the loss (CLIP layers after the feature layer, its
    post_layernorm) get no gradient and are not listed."""
    model.zero_grad()
    out = model(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    grads = {hf_name_to_ours(k): v for k, v in torch_grads(model).items()}
    return RunResult(out.logits.detach().numpy(), float(out.loss.detach()), grads)


# ---- msmm side -------------------------------------------------------------------------------

def msmm_run(model: Llava, batch: Dict[str, np.ndarray]) -> RunResult:
    model.zero_grad()
    loss, logits = model(**{k: torch.tensor(v) for k, v in batch.items()})
    loss.backward()
    return RunResult(logits.detach().numpy(), float(loss.detach()), torch_grads(model))


# ---- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "samples,feature_layer,strategy",
    [(ONE_IMAGE, -2, "default"), (SEVERAL_IMAGES, -2, "default"), (SEVERAL_IMAGES, -1, "full")],
    ids=["one_image", "several_images", "last_layer_full"],
)
def test_llava_matches_hf(samples, feature_layer, strategy, tmp_path, rng):
    ref_model = hf_llava(feature_layer, strategy)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = make_batch(rng, samples, strategy)
    ref = hf_run(ref_model, batch)

    model = from_pretrained(str(tmp_path))
    assert len(model.vision_tower.encoder.layers) == 3 + 1 + feature_layer
    ours = msmm_run(model, batch)
    errs = assert_vlm_parity(ours, ref, valid=batch["attention_mask"])
    print(len(samples), feature_layer, strategy, errs)


def test_config_errors_name_the_key(tmp_path):
    ref_model = hf_llava()
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    with open(os.path.join(tmp_path, "config.json")) as f:
        config = json.load(f)
    with pytest.raises(ValueError, match="vision_feature_layer"):
        llava_config_from_hf(dict(config, vision_feature_layer=[-2, -1]))
    with pytest.raises(ValueError, match="only CLIP"):
        llava_config_from_hf(dict(config, vision_config=dict(config["vision_config"], model_type="siglip_vision_model")))
    with pytest.raises(ValueError, match="select_strategy"):
        llava_config_from_hf(dict(config, vision_feature_select_strategy="cls"))
