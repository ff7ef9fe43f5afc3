"""Qwen2-VL / Qwen2.5-VL vs HF Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration
on tiny random configs, loaded from the safetensors the HF model saved: one image, several
images (batch with padding), video + image. Logits, loss and every parameter's gradient."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from msmm.checkpoint.hf import weight_files
from msmm.checkpoint.names import QWEN2_VL
from msmm.models import load_hf_weights
from msmm.models.qwen2_vl import Qwen2VL, Qwen2VLConfig
from parity_utils import RunResult, assert_parity, torch_grads

VOCAB = 100
VISION_START, VISION_END, IMAGE, VIDEO = 95, 96, 97, 98
PATCH, TEMPORAL, MERGE = 4, 2, 2
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH

TEXT_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
    tie_word_embeddings=False,
)
VISION_CONFIGS = {
    "qwen2_vl": dict(
        depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2,
        patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3,
    ),
    "qwen2_5_vl": dict(
        depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=48, num_heads=4, hidden_act="silu",
        patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3,
        window_size=2 * MERGE * PATCH, fullatt_block_indexes=[1], tokens_per_second=2,
    ),
}

# Each case: rows of items; an item is ("text", n) or ("image"|"video", (t, h, w)) in patches.
CASES = {
    "one_image": [[("text", 3), ("image", (1, 4, 6)), ("text", 6)]],
    "several_images": [
        [("text", 2), ("image", (1, 6, 10)), ("text", 3), ("image", (1, 4, 4)), ("text", 4)],
        [("text", 4), ("image", (1, 4, 8)), ("text", 5)],
    ],
    "video": [[("text", 2), ("video", (2, 4, 4)), ("text", 3), ("image", (1, 4, 6)), ("text", 4)]],
}


def make_inputs(rng: np.random.Generator, rows) -> dict:
    """Token ids (vision blocks = start, pads, end), right padding, labels (-100 on vision
    tokens, the first token and padding), random pixels and the grids."""
    seqs, images, videos = [], [], []
    for items in rows:
        ids = []
        for kind, arg in items:
            if kind == "text":
                ids += rng.integers(0, VISION_START, size=arg).tolist()
                continue
            t, h, w = arg
            (images if kind == "image" else videos).append(arg)
            ids += [VISION_START] + [IMAGE if kind == "image" else VIDEO] * (t * h * w // MERGE**2) + [VISION_END]
        seqs.append(ids)
    length = max(map(len, seqs))
    input_ids = np.zeros((len(seqs), length), np.int64)
    attention_mask = np.zeros_like(input_ids)
    for i, ids in enumerate(seqs):
        input_ids[i, : len(ids)], attention_mask[i, : len(ids)] = ids, 1
    labels = np.where((attention_mask == 1) & (input_ids < VISION_START), input_ids, -100)
    labels[:, 0] = -100
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    for key, grids in (("pixel_values", images), ("pixel_values_videos", videos)):
        if grids:
            n = sum(t * h * w for t, h, w in grids)
            batch[key] = rng.standard_normal((n, PATCH_DIM)).astype(np.float32)
            batch["image_grid_thw" if key == "pixel_values" else "video_grid_thw"] = np.array(grids, np.int64)
    if videos:
        batch["second_per_grid_ts"] = np.array([2.0] * len(videos), np.float32)
    return batch


# ---- reference side: HF transformers ----------------------------------------------------

def hf_model(family: str, seed: int = 0, tie_word_embeddings: bool = False):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    config_cls, model_cls = {
        "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
        "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    }[family]
    config = config_cls(
        text_config=dict(TEXT_CONFIG, tie_word_embeddings=tie_word_embeddings),
        vision_config=VISION_CONFIGS[family],
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        vocab_size=VOCAB,  # HF's loss reads the top-level vocab_size
        tie_word_embeddings=tie_word_embeddings,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = model_cls(config).float()
    with torch.no_grad():  # non-trivial norm weights and biases
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_run(model, batch: dict) -> RunResult:
    model.zero_grad()
    out = model(**{k: torch.tensor(v) for k, v in batch.items()}, use_cache=False)
    out.loss.backward()
    # HF's in-memory names -> checkpoint (= our) names
    grads = {QWEN2_VL.mm_name(k): v for k, v in torch_grads(model).items()}
    return RunResult(out.logits.detach().numpy(), float(out.loss.detach()), grads)


# ---- msmm side ----------------------------------------------------------------------------

def msmm_model(checkpoint: str) -> Qwen2VL:
    with open(os.path.join(checkpoint, "config.json")) as f:
        model = Qwen2VL(Qwen2VLConfig.from_hf(json.load(f)))
    load_hf_weights(model, checkpoint, "qwen2_vl")
    return model


def msmm_run(model: Qwen2VL, batch: dict) -> RunResult:
    meta = model.prepare_metadata(
        batch["input_ids"], batch["attention_mask"], batch.get("image_grid_thw"),
        batch.get("video_grid_thw"), batch.get("second_per_grid_ts"),
    )
    inputs = {k: torch.tensor(v) for k, v in {**batch, **meta}.items()}
    model.zero_grad()
    loss, logits = model(**inputs)
    loss.backward()
    return RunResult(logits.detach().numpy(), float(loss.detach()), torch_grads(model))


# ---- tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def checkpoint(request, tmp_path_factory):
    """HF model and its checkpoint dir; the Qwen2.5-VL one is saved sharded."""
    family = request.param
    model = hf_model(family)
    path = str(tmp_path_factory.mktemp(family))
    model.save_pretrained(path, safe_serialization=True, max_shard_size="40KB" if family == "qwen2_5_vl" else "1GB")
    return family, model, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_hf(checkpoint, case, rng):
    family, ref_model, path = checkpoint
    batch = make_inputs(rng, CASES[case])
    ref = hf_run(ref_model, batch)
    ours = msmm_run(msmm_model(path), batch)
    errs = assert_parity(ours, ref, valid=batch["attention_mask"])
    print(family, case, errs)


def test_sharded_checkpoint_is_read_whole(checkpoint):
    family, ref_model, path = checkpoint
    files = weight_files(path)
    if family == "qwen2_5_vl":
        assert len(files) > 1 and os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    model = msmm_model(path)
    ours = model.state_dict()
    for name, tensor in ref_model.state_dict().items():
        assert torch.equal(ours[QWEN2_VL.mm_name(name)], tensor), name


def test_forward_computes_metadata_when_not_given(checkpoint, rng):
    """Eager convenience: without position_ids / vision_* inputs forward derives them."""
    _, _, path = checkpoint
    model = msmm_model(path)
    batch = make_inputs(rng, CASES["video"])
    with torch.no_grad():
        meta = model.prepare_metadata(
            batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"],
            batch["video_grid_thw"], batch["second_per_grid_ts"],
        )
        given = model(**{k: torch.tensor(v) for k, v in {**batch, **meta}.items()})[1]
        derived = model(**{k: torch.tensor(v) for k, v in batch.items()})[1]
    assert torch.equal(given, derived)


def test_tied_embeddings(tmp_path, rng):
    """Qwen2-VL-2B ties lm_head to the embeddings; HF saves the shared tensor once."""
    ref_model = hf_model("qwen2_vl", tie_word_embeddings=True)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    model = msmm_model(str(tmp_path))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    batch = make_inputs(rng, CASES["one_image"])
    errs = assert_parity(msmm_run(model, batch), hf_run(ref_model, batch), valid=batch["attention_mask"])
    print("qwen2_vl tied", errs)
