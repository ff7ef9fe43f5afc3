"""Greedy generation on MindSpore (msmm.models through the auto_convert hook onto
adapters.torch, as ``msmm-infer`` runs them) gives HF ``generate``'s tokens on real torch:
Qwen2-VL and Qwen2.5-VL (image + video), InternVL (left-padded batch of 2), LLaVA (image);
InternVL with a repetition penalty (tokens chosen on the host)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import ms_backend  # noqa: E402
from test_generate import CASES, NEW, hf_generate, load_msmm, reference_case, tiny_hf  # noqa: E402

from msmm.infer.generate import GenerationConfig, generate  # noqa: E402


@pytest.mark.parametrize("family", sorted(CASES))
def test_greedy_on_mindspore_matches_hf_generate(family, tmp_path, rng):
    ref, inputs, expected = reference_case(family, rng)
    directory = tiny_hf.save(ref, str(tmp_path))
    ms_backend.converted_models()
    with ms_backend.converted_in_sys_modules():
        model = load_msmm(family, directory)
        assert type(model).__module__.startswith("msmm.models") and ms_backend.converted_models().torch is \
            sys.modules[type(model).__module__].torch  # bound to adapters.torch, not real torch
        got = generate(model, inputs.pop("input_ids"), inputs.pop("attention_mask"),
                       GenerationConfig(max_new_tokens=NEW), **inputs)
    np.testing.assert_array_equal(got, expected)


def test_host_chosen_tokens_on_mindspore_match_hf_generate(tmp_path, rng):
    """With a repetition penalty the tokens are chosen on the host from the compiled graphs'
    logits (not the graphs' argmax) and fed back: still HF ``generate``'s tokens."""
    build, make_inputs = CASES["internvl"]
    ref = build()
    inputs = make_inputs(rng)
    expected = hf_generate(ref, inputs, repetition_penalty=1.5)
    assert not np.array_equal(expected, hf_generate(ref, inputs))  # the penalty changes the answer
    directory = tiny_hf.save(ref, str(tmp_path))
    with ms_backend.converted_in_sys_modules():
        model = load_msmm("internvl", directory)
        got = generate(model, inputs.pop("input_ids"), inputs.pop("attention_mask"),
                       GenerationConfig(max_new_tokens=NEW, repetition_penalty=1.5), **inputs)
    np.testing.assert_array_equal(got, expected)
