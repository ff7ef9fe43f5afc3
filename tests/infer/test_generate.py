"""Greedy generation with the KV cache equals HF ``generate`` on the same tiny models and
prompts (image, video + image, left-padded batch); sampling filters against direct checks."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "convert"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402
import tiny_hf  # noqa: E402

from msmm.infer.generate import GenerationConfig, generate, process_logits  # noqa: E402

NEW = 8


def hf_generate(model, inputs: dict, **options) -> np.ndarray:
    with torch.no_grad():
        out = model.generate(**{k: torch.tensor(v) for k, v in inputs.items()}, max_new_tokens=NEW, do_sample=False,
                             pad_token_id=0, eos_token_id=None, **options)
    return out[:, inputs["input_ids"].shape[1]:].numpy()


def qwen_inputs(rng) -> dict:
    v, img, vid = tiny_hf.VISION_START, tiny_hf.IMAGE, tiny_hf.VIDEO
    ids = np.array([[1, v] + [img] * 4 + [96, 2, v] + [vid] * 8 + [96, 3]])
    return dict(input_ids=ids, attention_mask=np.ones_like(ids),
                pixel_values=rng.standard_normal((16, 96)).astype(np.float32), image_grid_thw=np.array([[1, 4, 4]]),
                pixel_values_videos=rng.standard_normal((32, 96)).astype(np.float32),
                video_grid_thw=np.array([[2, 4, 4]]))


def internvl_inputs(rng) -> dict:
    img = tiny_hf.IMAGE
    ids = np.array([[0, 0, 5, 1] + [img] * 4 + [6], [1, 2, 3, 4] + [img] * 4 + [9]])
    mask = np.array([[0, 0, 1, 1] + [1] * 5, [1] * 9])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=rng.standard_normal((2, 3, 28, 28)).astype(np.float32))


def llava_inputs(rng) -> dict:
    ids = np.array([[1, 7] + [tiny_hf.IMAGE] * 16 + [8, 9]])
    return dict(input_ids=ids, attention_mask=np.ones_like(ids),
                pixel_values=rng.standard_normal((1, 3, 28, 28)).astype(np.float32))


def load_msmm(family: str, directory: str):
    from msmm.models import from_pretrained

    return from_pretrained(directory).eval()


CASES = {
    "qwen2_vl": (lambda: tiny_hf.qwen2_vl("qwen2_vl"), qwen_inputs),
    "qwen2_5_vl": (lambda: tiny_hf.qwen2_vl("qwen2_5_vl"), qwen_inputs),
    "internvl": (tiny_hf.internvl, internvl_inputs),
    "llava": (tiny_hf.llava, llava_inputs),
}


def reference_case(family: str, rng):
    """The tiny HF model of ``family``, its generation inputs and HF's greedy tokens."""
    build, make_inputs = CASES[family]
    ref = build()
    inputs = make_inputs(rng)
    if family == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = np.array([1.0], np.float32)
    return ref, inputs, hf_generate(ref, inputs)


@pytest.mark.parametrize("family", sorted(CASES))
def test_greedy_matches_hf_generate(family, tmp_path, rng):
    ref, inputs, expected = reference_case(family, rng)
    ours = load_msmm(family, tiny_hf.save(ref, str(tmp_path)))
    got = generate(ours, inputs.pop("input_ids"), inputs.pop("attention_mask"), GenerationConfig(max_new_tokens=NEW),
                   **inputs)
    np.testing.assert_array_equal(got, expected)


def test_stop_tokens_end_rows_and_pad(tmp_path, rng):
    ref = tiny_hf.internvl()
    inputs = internvl_inputs(rng)
    full = hf_generate(ref, inputs)
    stop = int(full[0, 2])
    ours = load_msmm("internvl", tiny_hf.save(ref, str(tmp_path)))
    got = generate(ours, inputs.pop("input_ids"), inputs.pop("attention_mask"),
                   GenerationConfig(max_new_tokens=NEW, stop_token_ids=(stop,), pad_token_id=-1), **inputs)
    first = list(full[0]).index(stop)
    np.testing.assert_array_equal(got[0, : first + 1], full[0, : first + 1])
    assert (got[0, first + 1:] == -1).all()


def test_logit_processors(rng):
    logits = rng.standard_normal((2, 50))
    seen = np.array([[3, 4, 4], [7, 8, 9]])
    greedy = process_logits(logits, seen, GenerationConfig(repetition_penalty=1.3))
    for b, ids in enumerate(seen):
        for i in set(ids):
            want = logits[b, i] * 1.3 if logits[b, i] < 0 else logits[b, i] / 1.3
            assert np.isclose(greedy[b, i], want)
    top_k = process_logits(logits, seen, GenerationConfig(do_sample=True, top_k=5))
    assert (np.isfinite(top_k).sum(-1) == 5).all()
    assert (np.argsort(-logits, -1)[:, :5] == np.argsort(-top_k, -1)[:, :5]).all()
    top_p = process_logits(logits, seen, GenerationConfig(do_sample=True, top_p=0.5, temperature=0.7))
    for b in range(2):
        probs = np.exp(logits[b] / 0.7 - (logits[b] / 0.7).max())
        probs /= probs.sum()
        kept = np.isfinite(top_p[b])
        # the kept set is the smallest prefix of the sorted probabilities reaching 0.5
        assert probs[kept].sum() >= 0.5 and probs[kept].sum() - probs[kept].min() < 0.5


def test_msmm_infer_cli_streams_the_greedy_answer(tmp_path, capsys):
    """inference.json with an HF checkpoint plus an MM checkpoint (TP=2, from mm-convert)
    on top, run on MindSpore as msmm-infer runs it; the streamed text is HF generate's answer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from msmm.convert.cli import main as mm_convert
    from msmm.infer.cli import infer

    vocab = {f"w{i}": i for i in range(tiny_hf.VOCAB)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="w0")
    ref = tiny_hf.internvl()
    hf = tiny_hf.save(ref, str(tmp_path / "hf"))
    tokenizer.save_pretrained(hf)
    assert mm_convert(["InternVLConverter", "hf_to_mm", "--cfg.mm_dir", str(tmp_path / "mm"),
                       "--cfg.hf_config.hf_dir", hf, "--cfg.parallel_config.tp_size", "2"]) == 0
    config = {"model": {"family": "internvl", "from_pretrained": hf, "ckpt_path": str(tmp_path / "mm")},
              "tokenizer": {"from_pretrained": hf}, "prompts": ["w5 w6 w7"],
              "generation_config": {"max_new_tokens": 6, "stop_token_ids": []}}
    with open(tmp_path / "inference.json", "w") as f:
        json.dump(config, f)
    capsys.readouterr()
    with ms_backend.converted_in_sys_modules():
        assert infer([str(tmp_path / "inference.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = hf_generate(ref, dict(input_ids=np.array([[5, 6, 7]]), attention_mask=np.ones((1, 3), np.int64)))
    assert out[0] == ">>> w5 w6 w7"
    assert out[1] == tokenizer.decode(expected[0, :6].tolist())
