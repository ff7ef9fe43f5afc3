"""``generate`` on a text-only causal LM (no vision inputs): greedy tokens equal HF
``generate`` for a tiny Qwen2, on a left-padded batch, on real torch and on MindSpore."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from msmm.infer.generate import GenerationConfig, generate
from msmm.models import text

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402

NEW = 8
IDS = np.array([[0, 0, 5, 7, 9, 11], [3, 4, 5, 6, 7, 8]])
MASK = np.array([[0, 0, 1, 1, 1, 1], [1] * 6])


def reference():
    """A tiny HF Qwen2 and its greedy tokens for the left-padded batch."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    ref = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        expected = ref.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=NEW,
                                do_sample=False, pad_token_id=0, eos_token_id=None)[:, IDS.shape[1]:].numpy()
    return ref, expected


def ours_from(ref, module, to_tensor):
    """Our Qwen2Decoder of ``module`` (real torch or converted) with the HF weights."""
    model = module.Qwen2Decoder(module.qwen2_config_from_hf(ref.config.to_dict()))
    state = {k: to_tensor(v.numpy()) for k, v in ref.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and all(k.endswith("rotary_emb.inv_freq") for k in unexpected)
    return model.eval()


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_text_causal_lm_greedy_matches_hf_generate(backend):
    ref, expected = reference()
    if backend == "torch":
        got = generate(ours_from(ref, text, torch.tensor), IDS, MASK, GenerationConfig(max_new_tokens=NEW))
    else:
        ms = ms_backend.converted_models()
        with ms_backend.converted_in_sys_modules():
            got = generate(ours_from(ref, ms.text, ms.torch.tensor), IDS, MASK, GenerationConfig(max_new_tokens=NEW))
    np.testing.assert_array_equal(got, expected)
