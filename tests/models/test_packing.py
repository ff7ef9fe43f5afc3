"""Packed rows (several samples per row, ``segment_ids`` + restarting ``position_ids``, as
``PackingCollator`` makes them) give InternVL and LLaVA the logits and the loss of their
samples run one by one: attention is block-diagonal. On real torch, and InternVL on
MindSpore in graph mode."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

from msmm.models.core import TransformerConfig
from msmm.models.internvl import InternVL, InternVLConfig
from msmm.models.llava import Llava, LlavaConfig
from msmm.models.vision.vit import ViTConfig

VOCAB = 64
IMAGE = VOCAB - 1
TILE = 28
TEXT = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                         ffn_hidden_size=64, vocab_size=VOCAB)


def internvl_config() -> InternVLConfig:
    vision = ViTConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, image_size=TILE,
                       patch_size=7)
    return InternVLConfig(vision=vision, text=TEXT, text_family="qwen2", image_token_id=IMAGE)


def llava_config() -> LlavaConfig:
    vision = ViTConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, image_size=TILE,
                       patch_size=14, activation="quick_gelu", feature_layer=-2)
    return LlavaConfig(vision=vision, text=TEXT, image_token_id=IMAGE, text_family="llama")


FAMILIES = {"internvl": (InternVL, internvl_config, 4), "llava": (Llava, llava_config, 4)}  # class, config, tokens/image


def samples(rng: np.random.Generator, tokens_per_image: int) -> List[Dict[str, np.ndarray]]:
    """Two samples (text, images, text) with labels -100 on image tokens and the first two tokens."""
    out = []
    for before, images, after in ((3, 1, 2), (2, 2, 3)):
        ids = np.concatenate([rng.integers(1, IMAGE, before), np.full(images * tokens_per_image, IMAGE),
                              rng.integers(1, IMAGE, after)])
        labels = np.where(ids == IMAGE, -100, ids)
        labels[:2] = -100
        pixels = rng.standard_normal((images, 3, TILE, TILE)).astype(np.float32)
        out.append(dict(input_ids=ids[None], labels=labels[None], attention_mask=np.ones_like(ids)[None],
                        position_ids=np.arange(len(ids))[None], pixel_values=pixels))
    return out


def pack(parts: List[Dict[str, np.ndarray]], length: int) -> Dict[str, np.ndarray]:
    """One row of ``length`` tokens holding ``parts`` in order, padded at the end (PackingCollator's layout)."""
    n = sum(p["input_ids"].shape[1] for p in parts)
    pad = length - n
    segment_ids = np.concatenate([np.full(p["input_ids"].shape[1], i) for i, p in enumerate(parts)] + [np.full(pad, -1)])
    return dict(
        input_ids=np.concatenate([p["input_ids"][0] for p in parts] + [np.zeros(pad, np.int64)])[None],
        labels=np.concatenate([p["labels"][0] for p in parts] + [np.full(pad, -100)])[None],
        attention_mask=(segment_ids >= 0).astype(np.int64)[None],
        position_ids=np.concatenate([p["position_ids"][0] for p in parts] + [np.zeros(pad, np.int64)])[None],
        segment_ids=segment_ids[None],
        pixel_values=np.concatenate([p["pixel_values"] for p in parts]),
    )


def counted(labels: np.ndarray) -> int:
    """Tokens that take loss: position t predicts labels[t + 1]."""
    return int((labels[:, 1:] != -100).sum())


def expected_packed(parts: List[Dict[str, np.ndarray]], runs: List[Tuple[float, np.ndarray]]) -> Tuple[float, np.ndarray]:
    """The packed row's loss (token mean over all samples) and its samples' logits, from the separate runs."""
    weights = [counted(p["labels"]) for p in parts]
    loss = sum(w * loss for w, (loss, _) in zip(weights, runs)) / sum(weights)
    return loss, np.concatenate([logits[0] for _, logits in runs])


def torch_run(model, batch: Dict[str, np.ndarray]) -> Tuple[float, np.ndarray]:
    with torch.no_grad():
        loss, logits = model(**{k: torch.tensor(v) for k, v in batch.items()})
    return float(loss), logits.numpy()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_row_equals_its_samples_run_separately(family, rng):
    cls, config, tokens_per_image = FAMILIES[family]
    torch.manual_seed(0)
    model = cls(config()).eval()
    parts = samples(rng, tokens_per_image)
    packed = pack(parts, 32)
    n = sum(p["input_ids"].shape[1] for p in parts)
    loss, logits = expected_packed(parts, [torch_run(model, p) for p in parts])
    got_loss, got_logits = torch_run(model, packed)
    np.testing.assert_allclose(got_logits[0, :n], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-5)
    # without segment_ids the second sample attends to the first: the test can tell
    _, unsegmented = torch_run(model, {k: v for k, v in packed.items() if k != "segment_ids"})
    assert not np.allclose(unsegmented[0, :n], logits, atol=1e-3)


def test_packed_internvl_on_mindspore_graph_mode(rng):
    import ms_backend

    torch.manual_seed(0)
    reference = InternVL(internvl_config())
    ms = ms_backend.converted_models()
    model = ms.internvl.InternVL(internvl_config())
    model.load_state_dict({k: ms.torch.tensor(v.numpy()) for k, v in reference.state_dict().items()})
    parts = samples(rng, 4)
    packed = pack(parts, 32)
    n = sum(p["input_ids"].shape[1] for p in parts)
    runs = [ms_backend.run(model, p, "graph") for p in parts]
    loss, logits = expected_packed(parts, [(r.loss, r.logits) for r in runs])
    got = ms_backend.run(model, packed, "graph")
    np.testing.assert_allclose(got.logits[0, :n], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.loss, loss, rtol=1e-5)
