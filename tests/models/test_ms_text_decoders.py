"""InternLM2 on MindSpore (auto_convert hook + adapters), PyNative and graph mode, through
its equivalence with HF ``LlamaForCausalLM`` (Llama weights packed into ``wqkv`` /
``w1,w3,w2``; gradients unpacked back), and against the same model file on real torch.
Qwen2 and Llama text decoders run on MindSpore inside the Qwen2-VL and LLaVA tests."""
from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import ms_backend
from parity_utils import RunResult, assert_parity
from test_text_decoders import (
    BASE,
    hf_model,
    hf_run,
    make_batch,
    msmm_model,
    msmm_run,
    pack_llama_as_internlm2,
    unpack_internlm2_grads,
)

HF_CONFIG = dict(BASE, num_attention_heads=6, num_key_value_heads=2)  # 3 queries per group
INTERNLM2_CONFIG = dict(HF_CONFIG, bias=False)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    ref_model = hf_model("llama", HF_CONFIG)
    path = str(tmp_path_factory.mktemp("ms_internlm2"))
    state = {k: v.detach().numpy() for k, v in ref_model.state_dict().items()}
    save_file(pack_llama_as_internlm2(state, HF_CONFIG), os.path.join(path, "model.safetensors"))
    input_ids, attention_mask, labels = make_batch(np.random.default_rng(0))

    ms = ms_backend.converted_models()
    model = ms.text.InternLM2Decoder(ms.text.internlm2_config_from_hf(INTERNLM2_CONFIG))
    ms.pretrained.load_hf_weights(model, path, "internlm2")
    torch_run = msmm_run(msmm_model("internlm2", INTERNLM2_CONFIG, path), input_ids, attention_mask, labels)
    return ms_backend.Case(
        name="internlm2",
        model=model,
        inputs=dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels),
        valid=attention_mask,
        hf=hf_run(ref_model, input_ids, attention_mask, labels),
        torch=torch_run,
    )


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_internlm2_equals_hf_llama(case, mode):
    ours = case.ms(mode)
    unpacked = RunResult(ours.logits, ours.loss, unpack_internlm2_grads(ours.grads, HF_CONFIG))
    print(case.name, mode, "vs HF Llama", assert_parity(unpacked, case.hf, valid=case.valid))


@pytest.mark.parametrize("mode", ms_backend.MODES)
def test_internlm2_matches_same_file_on_torch(case, mode):
    print(case.name, mode, "vs torch", assert_parity(case.ms(mode), case.torch, valid=case.valid))
