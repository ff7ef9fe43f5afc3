"""Packing: one row of several samples, as ``PackingCollator`` makes it (``segment_ids``,
positions restarting per sample, each sample's first label -100; for Qwen2-VL the M-RoPE
positions of ``prepare_metadata(segment_ids=...)`` restart per sample too), gives the loss and
the gradients of its samples run one by one: the token-weighted mean of their losses and of
their gradients. InternVL, LLaVA and Qwen2-VL, on real torch and on MindSpore (PyNative and
graph mode). Without the segments (or without the restart) the packed row differs."""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import pytest
import torch

from msmm.data.collate import PackingCollator
from msmm.models.core import TransformerConfig
from msmm.models.internvl import InternVL, InternVLConfig
from msmm.models.llava import Llava, LlavaConfig
from msmm.models.qwen2_vl import Qwen2VL, Qwen2VLConfig
from msmm.models.vision.vit import ViTConfig
from parity_utils import RunResult, torch_grads
from test_qwen2_vl import IMAGE as QWEN_IMAGE
from test_qwen2_vl import MERGE, PATCH_DIM, TEXT_CONFIG, VISION_CONFIGS, VISION_END, VISION_START
from vlm_parity_utils import grad_errors

VOCAB = 64
IMAGE = VOCAB - 1
TILE = 28
TEXT = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                         ffn_hidden_size=64, vocab_size=VOCAB)
LOSS_RTOL, GRAD_RTOL = 1e-6, 1e-5
Sample = Dict[str, np.ndarray]


def internvl_config() -> InternVLConfig:
    vision = ViTConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, image_size=TILE,
                       patch_size=7)
    return InternVLConfig(vision=vision, text=TEXT, text_family="qwen2", image_token_id=IMAGE)


def llava_config() -> LlavaConfig:
    vision = ViTConfig(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, image_size=TILE,
                       patch_size=14, activation="quick_gelu", feature_layer=-2)
    return LlavaConfig(vision=vision, text=TEXT, image_token_id=IMAGE, text_family="llama")


def qwen2_vl_config() -> Qwen2VLConfig:
    return Qwen2VLConfig.from_hf(dict(model_type="qwen2_vl", text_config=TEXT_CONFIG,
                                      vision_config=VISION_CONFIGS["qwen2_vl"], image_token_id=QWEN_IMAGE,
                                      video_token_id=QWEN_IMAGE + 1, vision_start_token_id=VISION_START))


def tile_samples(rng: np.random.Generator, tokens_per_image: int, vocab: int) -> List[Sample]:
    """Three samples (text, images, text); labels -100 on image tokens and the first two tokens."""
    out = []
    for before, images, after in ((3, 1, 2), (2, 2, 3), (4, 1, 5)):
        ids = np.concatenate([rng.integers(1, vocab - 1, before), np.full(images * tokens_per_image, vocab - 1),
                              rng.integers(1, vocab - 1, after)])
        labels = np.where(ids == vocab - 1, -100, ids)
        labels[:2] = -100
        out.append(dict(input_ids=ids, labels=labels,
                        pixel_values=rng.standard_normal((images, 3, TILE, TILE)).astype(np.float32)))
    return out


def qwen2_vl_samples(rng: np.random.Generator) -> List[Sample]:
    """Three samples: text, one or two images (vision start, pads, end), text."""
    out = []
    for before, grids, after in ((3, [(1, 4, 4)], 4), (2, [(1, 4, 6), (1, 2, 4)], 3), (5, [(1, 2, 2)], 2)):
        ids = rng.integers(0, VISION_START, before).tolist()
        for t, h, w in grids:
            ids += [VISION_START] + [QWEN_IMAGE] * (t * h * w // MERGE**2) + [VISION_END]
        ids = np.asarray(ids + rng.integers(0, VISION_START, after).tolist())
        labels = np.where(ids < VISION_START, ids, -100)
        labels[0] = -100
        patches = sum(t * h * w for t, h, w in grids)
        out.append(dict(input_ids=ids, labels=labels, image_grid_thw=np.array(grids, np.int64),
                        pixel_values=rng.standard_normal((patches, PATCH_DIM)).astype(np.float32)))
    return out


# family -> (torch class, config, MindSpore class name, samples)
FAMILIES: Dict[str, tuple] = {
    "internvl": (InternVL, internvl_config, ("internvl", "InternVL"), lambda rng: tile_samples(rng, 4, VOCAB)),
    "llava": (Llava, llava_config, ("llava", "Llava"), lambda rng: tile_samples(rng, 4, VOCAB)),
    "qwen2_vl": (Qwen2VL, qwen2_vl_config, ("qwen2_vl", "Qwen2VL"), qwen2_vl_samples),
}


def model_inputs(model, batch: Sample) -> Sample:
    """What the trainer's InputBuilder hands the model: Qwen2-VL's metadata (M-RoPE positions,
    restarting per segment) replaces the collator's 1D positions; ``cu_seqlens`` stays out."""
    batch = {k: v for k, v in batch.items() if k != "cu_seqlens"}
    if isinstance(model, Qwen2VL) or hasattr(model, "prepare_metadata"):
        batch.update(model.prepare_metadata(batch["input_ids"], batch["attention_mask"], batch.get("image_grid_thw"),
                                            segment_ids=batch.get("segment_ids")))
        batch.pop("image_grid_thw")
    return batch


def alone(model, sample: Sample) -> Sample:
    """One sample as a batch of one row without padding."""
    n = len(sample["input_ids"])
    batch = {k: v[None] if k in ("input_ids", "labels") else v for k, v in sample.items()}
    return model_inputs(model, dict(batch, attention_mask=np.ones((1, n), np.int64),
                                    position_ids=np.arange(n)[None]))


def packed(model, samples: List[Sample], padding: int = 3) -> Sample:
    length = sum(len(s["input_ids"]) for s in samples) + padding
    batch = PackingCollator(pad_id=0, pack_length=length)(samples)
    assert batch["input_ids"].shape == (1, length)
    return model_inputs(model, batch)


def torch_run(model, inputs: Sample) -> RunResult:
    model.zero_grad()
    loss, logits = model(**{k: torch.tensor(v) for k, v in inputs.items()})
    loss.backward()
    return RunResult(logits.detach().numpy(), float(loss.detach()), torch_grads(model))


def counted(labels: np.ndarray) -> int:
    """Tokens that take loss: position t predicts labels[t + 1]."""
    return int((labels[:, 1:] != -100).sum())


def check_packed_equals_separate(run: Callable[[Sample], RunResult], model, samples: List[Sample]) -> dict:
    separate = [alone(model, s) for s in samples]
    runs = [run(b) for b in separate]
    weights = np.array([counted(b["labels"]) for b in separate], np.float64)
    weights /= weights.sum()
    got = run(packed(model, samples))
    loss = float(sum(w * r.loss for w, r in zip(weights, runs)))
    n = sum(len(s["input_ids"]) for s in samples)
    logits = np.concatenate([r.logits[0] for r in runs])
    errs = {"loss": abs(got.loss - loss) / loss, "logits": float(np.abs(got.logits[0, :n] - logits).max())}
    # relative per parameter (the ViTs' key biases, whose true gradient is 0: against the largest gradient)
    expected = {k: sum(w * r.grads[k] for w, r in zip(weights, runs)) for k in got.grads}
    errs["grads"] = max(grad_errors(got.grads, expected).values())
    assert errs["loss"] <= LOSS_RTOL and errs["grads"] <= GRAD_RTOL and errs["logits"] <= 1e-4, errs
    return errs


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    """(family, the torch model, its samples)."""
    cls, config, _, make = FAMILIES[request.param]
    torch.manual_seed(0)
    return request.param, cls(config()), make(np.random.default_rng(0))


def test_collator_layout():
    samples = tile_samples(np.random.default_rng(0), 4, VOCAB)
    batch = PackingCollator(pad_id=0, pack_length=64)(samples)
    starts = [0, 9, 9 + 13]
    assert (batch["labels"][0, starts] == -100).all()  # a sample's first token is never a target
    assert batch["position_ids"][0, starts].tolist() == [0, 0, 0]
    assert batch["segment_ids"][0, -1] == -1 and batch["cu_seqlens"].tolist() == [0, 9, 22, 35, 64]


def test_packed_equals_separate_on_torch(family):
    name, model, samples = family
    print(name, "torch", check_packed_equals_separate(lambda b: torch_run(model, b), model, samples))


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_packed_equals_separate_on_mindspore(family, mode):
    import ms_backend

    name, reference, samples = family
    ms = ms_backend.converted_models()
    module, cls = FAMILIES[name][2]
    model = getattr(getattr(ms, module), cls)(FAMILIES[name][1]())
    model.load_state_dict({k: ms.torch.tensor(v.numpy()) for k, v in reference.state_dict().items()})
    print(name, mode, check_packed_equals_separate(lambda b: ms_backend.run(model, b, mode), model, samples))


def test_without_segments_the_packed_row_differs(family):
    """The checks can tell: without the segments, later samples attend to earlier ones."""
    name, model, samples = family
    batch = packed(model, samples)
    n = len(samples[0]["input_ids"])
    reference = torch_run(model, batch).logits[0, n:]
    unsegmented = {k: v for k, v in batch.items() if k != "segment_ids"}
    assert not np.allclose(torch_run(model, unsegmented).logits[0, n:], reference, atol=1e-3)


def test_qwen2_vl_mrope_positions_restart_per_packed_sample():
    """The packed row's M-RoPE positions are each sample's own (RoPE being relative, a shift
    within a segment would give the same attention; the positions are the separate runs')."""
    model = Qwen2VL(qwen2_vl_config())
    samples = qwen2_vl_samples(np.random.default_rng(0))
    got = packed(model, samples)["position_ids"]
    expected = np.concatenate([alone(model, s)["position_ids"] for s in samples], axis=2)
    n = expected.shape[2]
    np.testing.assert_array_equal(got[:, :, :n], expected)
    assert (got[:, :, n:] == 1).all()  # padding, as HF places it
    assert got[0, 0, n - 1] < n - len(samples[-1]["input_ids"])  # the last sample does not continue the others
