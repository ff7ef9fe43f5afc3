"""LLaVA-1.5 on MindSpore (auto_convert hook + adapters), PyNative and graph mode: against HF
``LlavaForConditionalGeneration`` (CLIP ViT, Llama text) and against the same model file on
real torch, loaded from the same safetensors, with one image and several images."""
from __future__ import annotations

import numpy as np
import pytest

import ms_backend
from msmm.models import from_pretrained as torch_from_pretrained
from test_llava import ONE_IMAGE, SEVERAL_IMAGES, hf_llava, hf_run, make_batch, msmm_run
from vlm_parity_utils import assert_vlm_parity

CASES = {"one_image": ONE_IMAGE, "several_images": SEVERAL_IMAGES}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """HF LLaVA (feature layer -2, class token dropped) and its checkpoint."""
    ref_model = hf_llava()
    path = str(tmp_path_factory.mktemp("ms_llava"))
    ref_model.save_pretrained(path, safe_serialization=True)
    return ref_model, path


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, checkpoint):
    """One HF run and one real-torch run of our model per case, shared by the modes."""
    ref_model, path = checkpoint
    batch = make_batch(np.random.default_rng(0), CASES[request.param], "default")
    return ms_backend.Case(
        name=f"llava/{request.param}",
        model=ms_backend.converted_models().pretrained.from_pretrained(path),
        inputs=batch,
        valid=batch["attention_mask"],
        hf=hf_run(ref_model, batch),
        torch=msmm_run(torch_from_pretrained(path), batch),
    )


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_matches_hf(case, mode):
    print(case.name, mode, "vs HF", assert_vlm_parity(case.ms(mode), case.hf, valid=case.valid))


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_matches_same_file_on_torch(case, mode):
    print(case.name, mode, "vs torch", assert_vlm_parity(case.ms(mode), case.torch, valid=case.valid))
