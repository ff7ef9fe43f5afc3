"""Qwen2-VL / Qwen2.5-VL on MindSpore (auto_convert hook + adapters), PyNative and graph
mode, against HF Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration and
against the same model file run on real torch, loaded from the same safetensors: one image,
several images (padded batch), video + image. Logits, loss, every parameter's gradient."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ms_backend
from parity_utils import assert_parity
from test_qwen2_vl import CASES, hf_model, hf_run, make_inputs
from test_qwen2_vl import msmm_model as torch_msmm_model
from test_qwen2_vl import msmm_run as torch_msmm_run

GRID_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")  # consumed by prepare_metadata


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def checkpoint(request, tmp_path_factory):
    """HF model, its checkpoint (Qwen2.5-VL's sharded) and our model loaded on MindSpore."""
    family = request.param
    ref_model = hf_model(family)
    path = str(tmp_path_factory.mktemp(f"ms_{family}"))
    ref_model.save_pretrained(path, safe_serialization=True, max_shard_size="40KB" if family == "qwen2_5_vl" else "1GB")
    ms = ms_backend.converted_models()
    with open(os.path.join(path, "config.json")) as f:
        model = ms.qwen2_vl.Qwen2VL(ms.qwen2_vl.Qwen2VLConfig.from_hf(json.load(f)))
    ms.pretrained.load_hf_weights(model, path, "qwen2_vl")
    return family, ref_model, path, model


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, checkpoint):
    """One HF run and one real-torch run of our model per (family, case), shared by the modes."""
    family, ref_model, path, model = checkpoint
    batch = make_inputs(np.random.default_rng(0), CASES[request.param])
    meta = model.prepare_metadata(*(batch.get(k) for k in ("input_ids", "attention_mask", *GRID_KEYS)))
    inputs = {k: v for k, v in {**batch, **meta}.items() if k not in GRID_KEYS}
    return ms_backend.Case(
        name=f"{family}/{request.param}",
        model=model,
        inputs=inputs,
        valid=batch["attention_mask"],
        hf=hf_run(ref_model, batch),
        torch=torch_msmm_run(torch_msmm_model(path), batch),
    )


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_matches_hf(case, mode):
    errs = assert_parity(case.ms(mode), case.hf, valid=case.valid)
    print(case.name, mode, "vs HF", errs)


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_matches_same_file_on_torch(case, mode):
    errs = assert_parity(case.ms(mode), case.torch, valid=case.valid)
    print(case.name, mode, "vs torch", errs)
