"""InternVL on MindSpore (auto_convert hook + adapters), PyNative and graph mode: against HF
``InternVLForConditionalGeneration`` (Qwen2 text) and against the same model file on real
torch, loaded from the same safetensors, with one image and several images (and the
QK-norm InternViT-6B style); the original remote-code layout against the HF-native one; remote-code InternVL with InternLM2 text
against HF InternVL with the equivalent Llama text."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ms_backend
from msmm.models import from_pretrained as torch_from_pretrained
from parity_utils import RunResult
from test_internvl import (
    IMG,
    ONE_IMAGE,
    SEVERAL_IMAGES,
    TEXT,
    hf_internvl,
    hf_run,
    make_batch,
    msmm_run,
    remote_config,
    saved_tensors,
    to_remote_layout,
    write_remote_checkpoint,
)
from test_text_decoders import pack_llama_as_internlm2, unpack_internlm2_grads
from vlm_parity_utils import assert_vlm_parity

CASES = {  # name: (vision variant, samples)
    "one_image": ("300m_style", ONE_IMAGE),
    "several_images": ("300m_style", SEVERAL_IMAGES),
    "qk_norm_several_images": ("6b_style", SEVERAL_IMAGES),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """vision variant -> (HF InternVL with Qwen2 text, its HF-native checkpoint), built once."""
    built = {}

    def get(variant: str):
        if variant not in built:
            ref_model = hf_internvl(variant)
            path = str(tmp_path_factory.mktemp(f"ms_internvl_{variant}"))
            ref_model.save_pretrained(path, safe_serialization=True)
            built[variant] = ref_model, path
        return built[variant]

    return get


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, checkpoints):
    """One HF run and one real-torch run of our model per case, shared by the modes."""
    variant, samples = CASES[request.param]
    ref_model, path = checkpoints(variant)
    batch = make_batch(np.random.default_rng(0), samples)
    return ms_backend.Case(
        name=f"internvl/{request.param}",
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


@pytest.mark.parametrize("variant", ["300m_style", "6b_style"])
def test_remote_code_layout_loads_like_hf_native(variant, checkpoints, tmp_path):
    """On MindSpore: the remote-code checkpoint loads to the HF-native parameters and logits."""
    ref_model, native_dir = checkpoints(variant)
    llm_config = dict(TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    remote_dir = write_remote_checkpoint(
        str(tmp_path / "remote"), to_remote_layout(saved_tensors(native_dir)),
        remote_config(ref_model.config, llm_config),
    )
    from_pretrained = ms_backend.converted_models().pretrained.from_pretrained
    native, remote = from_pretrained(native_dir), from_pretrained(remote_dir, image_token_id=IMG)
    native_state, remote_state = native.state_dict(), remote.state_dict()
    assert native_state.keys() == remote_state.keys()
    for key in native_state:
        np.testing.assert_array_equal(native_state[key].asnumpy(), remote_state[key].asnumpy(), err_msg=key)
    batch = make_batch(np.random.default_rng(0), SEVERAL_IMAGES)
    inputs = ms_backend.to_ms({k: v for k, v in batch.items() if k != "labels"})
    np.testing.assert_array_equal(native(**inputs).asnumpy(), remote(**inputs).asnumpy())


@pytest.fixture(scope="module")
def internlm2_case(tmp_path_factory):
    """Remote-code InternVL with InternLM2 text (packed wqkv) vs HF InternVL with Llama text."""
    ref_model = hf_internvl("300m_style", text_model_type="llama")
    root = tmp_path_factory.mktemp("ms_internvl_internlm2")
    native_dir = os.path.join(root, "native")
    ref_model.save_pretrained(native_dir, safe_serialization=True)
    native = saved_tensors(native_dir)
    text = {k[len("language_model."):]: v for k, v in native.items() if k.startswith("language_model.")}
    remote = to_remote_layout({k: v for k, v in native.items() if not k.startswith("language_model.")})
    remote.update({"language_model." + k: v for k, v in pack_llama_as_internlm2(text, TEXT).items()})
    llm_config = dict(TEXT, model_type="internlm2", architectures=["InternLM2ForCausalLM"], bias=False)
    remote_dir = write_remote_checkpoint(
        os.path.join(root, "remote"), remote, remote_config(ref_model.config, llm_config)
    )
    model = ms_backend.converted_models().pretrained.from_pretrained(remote_dir, image_token_id=IMG)
    assert model.config.text_family == "internlm2"
    batch = make_batch(np.random.default_rng(0), SEVERAL_IMAGES)
    return ms_backend.Case(
        name="internvl-remote/internlm2", model=model, inputs=batch, valid=batch["attention_mask"],
        hf=hf_run(ref_model, batch), torch=None,
    )


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_remote_code_internlm2_text_matches_hf_llama(internlm2_case, mode):
    ours = internlm2_case.ms(mode)
    ours = RunResult(ours.logits, ours.loss, unpack_internlm2_grads(ours.grads, TEXT))
    errs = assert_vlm_parity(ours, internlm2_case.hf, valid=internlm2_case.valid)
    print(internlm2_case.name, mode, "vs HF", errs)
