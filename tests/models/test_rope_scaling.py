"""HF ``rope_scaling`` (linear, dynamic NTK, yarn) in the text decoders: logits, loss and
gradients equal HF Qwen2ForCausalLM / LlamaForCausalLM (InternLM2 through its Llama
equivalence) on real torch and on MindSpore (PyNative and graph); greedy decoding of an
InternLM2 with InternVL2's ``dynamic`` scaling past its context equals HF ``generate``; types
and keys msmm does not implement are refused naming the key."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import ms_backend
from msmm.infer.generate import GenerationConfig, generate
from msmm.models.internvl import internvl_config_from_hf
from msmm.models.text import internlm2_config_from_hf, qwen2_config_from_hf
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

LOGITS_ATOL = 1e-5  # the bound for scaled RoPE
# name -> (rope_scaling, config changes). The batch has 14 positions: dynamic scaling starts
# past max_position_embeddings 8; yarn's ramp covers channels 1..5 of 6 with a 4096 context.
SCALINGS = {
    "linear": ({"rope_type": "linear", "factor": 2.0}, {}),
    "dynamic": ({"type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 8}),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
             {"max_position_embeddings": 16384}),
    "yarn_mscale": ({"rope_type": "yarn", "factor": 8.0, "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16.0},
                    {"max_position_embeddings": 4096}),
}


def scaled(name: str, **changes) -> dict:
    rope_scaling, extra = SCALINGS[name]
    return dict(BASE, rope_scaling=dict(rope_scaling), **extra, **changes)


def check(ours: RunResult, ref: RunResult, valid: np.ndarray) -> dict:
    errs = assert_parity(ours, ref, valid=valid)
    assert errs["logits_abs"] <= LOGITS_ATOL, errs
    return errs


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_scaled_rope_matches_hf(family, name, tmp_path, rng):
    hf_config = scaled(name)
    ref_model = hf_model(family, hf_config)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = make_batch(rng)
    plain = hf_run(hf_model(family, BASE), *batch)
    ref = hf_run(ref_model, *batch)
    assert np.abs(ref.logits - plain.logits).max() > 10 * LOGITS_ATOL  # the scaling changes the logits
    print(family, name, check(msmm_run(msmm_model(family, hf_config, str(tmp_path)), *batch), ref, batch[1]))


def internlm2_checkpoint(hf_config: dict, directory: str):
    """HF Llama of ``hf_config`` and the same weights as an InternLM2 checkpoint in ``directory``."""
    ref_model = hf_model("llama", hf_config)
    state = {k: v.detach().numpy() for k, v in ref_model.state_dict().items()}
    save_file(pack_llama_as_internlm2(state, hf_config), os.path.join(directory, "model.safetensors"))
    return ref_model


@pytest.mark.parametrize("name", ["linear", "dynamic"])
def test_internlm2_scaled_rope_equals_llama(name, tmp_path, rng):
    hf_config = scaled(name, num_attention_heads=6)
    ref_model = internlm2_checkpoint(hf_config, str(tmp_path))
    batch = make_batch(rng)
    ours = msmm_run(msmm_model("internlm2", dict(hf_config, bias=False), str(tmp_path)), *batch)
    ours.grads = unpack_internlm2_grads(ours.grads, hf_config)
    print("internlm2", name, check(ours, hf_run(ref_model, *batch), batch[1]))


# ---- MindSpore -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ms_cases(tmp_path_factory):
    """Qwen2 with yarn (static frequencies, scaled cos/sin) and InternLM2 with dynamic NTK
    (the base follows the positions inside the graph) on MindSpore."""
    ms = ms_backend.converted_models()
    batch = make_batch(np.random.default_rng(0))
    inputs = dict(input_ids=batch[0], attention_mask=batch[1], labels=batch[2])
    cases = {}

    qwen_config = scaled("yarn")
    path = str(tmp_path_factory.mktemp("rope_qwen2"))
    ref_model = hf_model("qwen2", qwen_config)
    ref_model.save_pretrained(path, safe_serialization=True)
    model = ms.text.Qwen2Decoder(ms.text.qwen2_config_from_hf(qwen_config))
    ms.pretrained.load_hf_weights(model, path, "qwen2")
    cases["qwen2_yarn"] = (ms_backend.Case("qwen2_yarn", model, inputs, hf_run(ref_model, *batch), valid=batch[1]),
                           None)

    llama_config = scaled("dynamic", num_attention_heads=6)
    path = str(tmp_path_factory.mktemp("rope_internlm2"))
    ref_model = internlm2_checkpoint(llama_config, path)
    model = ms.text.InternLM2Decoder(ms.text.internlm2_config_from_hf(dict(llama_config, bias=False)))
    ms.pretrained.load_hf_weights(model, path, "internlm2")
    cases["internlm2_dynamic"] = (ms_backend.Case("internlm2_dynamic", model, inputs, hf_run(ref_model, *batch),
                                                  valid=batch[1]), llama_config)
    return cases


@pytest.mark.parametrize("mode", ms_backend.MODES)
@pytest.mark.parametrize("name", ["qwen2_yarn", "internlm2_dynamic"])
def test_scaled_rope_on_mindspore_matches_hf(ms_cases, name, mode):
    case, llama_config = ms_cases[name]
    ours = case.ms(mode)
    if llama_config is not None:
        ours = RunResult(ours.logits, ours.loss, unpack_internlm2_grads(ours.grads, llama_config))
    print(name, mode, check(ours, case.hf, case.valid))


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_internlm2_dynamic_greedy_decoding_matches_hf_generate(backend, tmp_path):
    """InternVL2's InternLM2 scaling ({"type": "dynamic", "factor": 2.0}) with a context of 8:
    a 6-token prompt decodes 10 tokens, the base growing at each step past position 8."""
    hf_config = dict(BASE, num_attention_heads=6, max_position_embeddings=8,
                     rope_scaling={"type": "dynamic", "factor": 2.0})
    ref_model = internlm2_checkpoint(hf_config, str(tmp_path)).eval()
    ids, mask = np.array([[0, 0, 5, 7, 9, 11], [3, 4, 5, 6, 7, 8]]), np.array([[0, 0, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        expected = ref_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                      max_new_tokens=10, do_sample=False, pad_token_id=0,
                                      eos_token_id=None)[:, ids.shape[1]:].numpy()
    config = dict(hf_config, bias=False)
    if backend == "torch":
        got = generate(msmm_model("internlm2", config, str(tmp_path)).eval(), ids, mask,
                       GenerationConfig(max_new_tokens=10))
    else:
        ms = ms_backend.converted_models()
        model = ms.text.InternLM2Decoder(ms.text.internlm2_config_from_hf(config))
        ms.pretrained.load_hf_weights(model, str(tmp_path), "internlm2")
        with ms_backend.converted_in_sys_modules():
            got = generate(model.eval(), ids, mask, GenerationConfig(max_new_tokens=10))
    np.testing.assert_array_equal(got, expected)


# ---- refused -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rope_scaling, message", [
    ({"rope_type": "llama3", "factor": 8.0}, r"rope_scaling.rope_type: 'llama3' is not supported"),
    ({"type": "longrope", "factor": 2.0}, r"rope_scaling.type: 'longrope' is not supported"),
    ({"type": "linear"}, r"rope_scaling.factor: required for rope type 'linear'"),
    ({"type": "linear", "factor": "2"}, r"rope_scaling.factor: expected a positive number, got '2'"),
    ({"type": "linear", "factor": 2.0, "beta_fast": 32}, r"rope_scaling.beta_fast: not a key of rope type 'linear'"),
    ({"type": "dynamic", "factor": 2.0, "max_position_embeddings": 8}, r"rope_scaling.max_position_embeddings: not"),
    ({"type": "linear", "rope_type": "yarn", "factor": 2.0}, r"rope_scaling: type 'linear' and rope_type 'yarn'"),
    ("linear", r"rope_scaling: expected an object or null"),
])
def test_unsupported_rope_scaling_is_refused(rope_scaling, message):
    with pytest.raises(ValueError, match=message):
        qwen2_config_from_hf(dict(BASE, rope_scaling=rope_scaling))


def test_dynamic_needs_the_context():
    hf = {k: v for k, v in BASE.items() if k != "max_position_embeddings"}
    with pytest.raises(ValueError, match=r"rope_scaling: rope type 'dynamic' needs the config's max_position_emb"):
        qwen2_config_from_hf(dict(hf, rope_scaling={"type": "dynamic", "factor": 2.0}))


def test_internlm2_refuses_yarn_naming_the_file():
    """InternLM2's modeling code has linear and dynamic only; an InternVL config.json says where."""
    llm = dict(BASE, bias=False, architectures=["InternLM2ForCausalLM"],
               rope_scaling={"type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match=r"InternLM2 config: rope_scaling type 'yarn' is not supported"):
        internlm2_config_from_hf(llm)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14, layer_norm_eps=1e-6, qkv_bias=True, qk_normalization=False, norm_type="layer_norm",
                  use_flash_attn=False)
    with pytest.raises(ValueError, match=r"ckpt/config.json: llm_config: rope_scaling.factor: required"):
        internvl_config_from_hf({"llm_config": dict(llm, rope_scaling={"type": "dynamic"}), "vision_config": vision},
                                image_token_id=5, where="ckpt/config.json")


@pytest.mark.parametrize("name", ["linear", "dynamic", "yarn"])
def test_mrope_with_scaling_matches_hf_qwen2_vl(name, tmp_path, rng):
    """Qwen2-VL's M-RoPE sections with a scaling in the same rope_scaling (HF reads both)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    import test_qwen2_vl as qwen

    scaling, extra = SCALINGS[name]
    text = dict(qwen.TEXT_CONFIG, **extra, rope_scaling={**scaling, "mrope_section": [2, 3, 3]})
    config = Qwen2VLConfig(text_config=text, vision_config=qwen.VISION_CONFIGS["qwen2_vl"], image_token_id=qwen.IMAGE,
                           video_token_id=qwen.VIDEO, vision_start_token_id=qwen.VISION_START, vocab_size=qwen.VOCAB,
                           attn_implementation="eager")
    torch.manual_seed(0)
    ref_model = Qwen2VLForConditionalGeneration(config).float()
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    batch = qwen.make_inputs(rng, qwen.CASES["one_image"])  # 17 positions: dynamic scaling past 8
    ours = qwen.msmm_run(qwen.msmm_model(str(tmp_path)), batch)
    print("qwen2_vl m-rope", name, check(ours, qwen.hf_run(ref_model, batch), batch["attention_mask"]))
