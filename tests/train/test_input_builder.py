"""``InputBuilder`` hands the model every batch key it takes and refuses the others by name:
nothing is silently dropped, so a packed batch's ``segment_ids`` reach InternVL and LLaVA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msmm.data.collate import PackingCollator, PaddingCollator
from msmm.models.core import TransformerConfig
from msmm.models.internvl import InternVL, InternVLConfig
from msmm.models.llava import Llava, LlavaConfig
from msmm.models.vision.vit import ViTConfig
from msmm.train.trainer import InputBuilder

IMAGE, TILE = 63, 28
TEXT = TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, vocab_size=64)
VISION = dict(num_layers=1, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, image_size=TILE)


def internvl() -> InternVL:
    return InternVL(InternVLConfig(ViTConfig(patch_size=7, **VISION), TEXT, "qwen2", IMAGE))


def llava() -> Llava:
    return Llava(LlavaConfig(ViTConfig(patch_size=14, feature_layer=-2, **VISION), TEXT, IMAGE))


def sample(rng: np.random.Generator, n: int, internvl_flags: bool) -> dict:
    ids = np.concatenate([[1, 2], np.full(4, IMAGE), rng.integers(3, IMAGE, n)])
    out = {"input_ids": ids, "labels": np.where(ids == IMAGE, -100, ids),
           "pixel_values": rng.standard_normal((1, 3, TILE, TILE)).astype(np.float32)}
    if internvl_flags:
        out["image_flags"] = np.ones(1, np.int64)
    return out


@pytest.mark.parametrize("build", [internvl, llava], ids=["internvl", "llava"])
def test_collated_batches_reach_the_model_whole(build, rng):
    torch.manual_seed(0)
    model = build()
    flags = isinstance(model, InternVL)
    samples = [sample(rng, 3, flags), sample(rng, 5, flags)]
    padded = PaddingCollator(0)(samples)
    assert set(InputBuilder(model)(padded)) >= set(padded)
    packed = PackingCollator(0, 32)(samples)
    inputs = InputBuilder(model)(packed)
    assert set(inputs) == set(packed) - {"cu_seqlens"}  # the boundaries travel as segment_ids
    np.testing.assert_array_equal(inputs["segment_ids"].asnumpy(), packed["segment_ids"])


def test_a_batch_key_the_model_does_not_take_is_an_error(rng):
    batch = PaddingCollator(0)([sample(rng, 3, False)])
    batch["image_grid_thw"] = np.array([[1, 2, 2]])
    with pytest.raises(ValueError, match=r"batch key 'image_grid_thw': Llava\.forward takes no such input"):
        InputBuilder(llava())(batch)


def test_without_seq_length_sequence_parallel_pads_to_a_multiple_of_the_ranks(rng):
    """--sequence-parallel without --seq-length: a 13-token micro-batch becomes 16 tokens for TP 4,
    the 3 added positions padding (attention mask 0, labels -100: no loss, never attended)."""
    batch = PaddingCollator(0)([sample(rng, 7, True)])
    assert batch["input_ids"].shape[1] == 13
    inputs = InputBuilder(internvl(), seq_multiple=4)(batch)
    assert inputs["input_ids"].shape == (1, 16)
    np.testing.assert_array_equal(inputs["labels"].asnumpy()[0, 13:], [-100] * 3)
    np.testing.assert_array_equal(inputs["attention_mask"].asnumpy()[0], [1] * 13 + [0] * 3)
    np.testing.assert_array_equal(inputs["input_ids"].asnumpy()[0, :13], batch["input_ids"][0])
