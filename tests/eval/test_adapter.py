"""``model.adapter`` / ``--adapter``: an HF PEFT LoRA adapter merged into the HF weights before
loading (mm-convert merge_lora): the merged weights equal PEFT's merge_and_unload()."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from msmm.eval.config import load_eval_config
from msmm.eval.datasets import EvalDataError
from msmm.eval.run import _merged_hf_dir
from tiny_bench import eval_json, tiny_internvl


def test_adapter_is_merged_into_the_hf_weights(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.numpy import load_file
    from transformers import InternVLForConditionalGeneration

    hf = tiny_internvl(str(tmp_path / "hf"))
    torch.manual_seed(0)
    peft_model = get_peft_model(InternVLForConditionalGeneration.from_pretrained(hf),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    adapter = str(tmp_path / "adapter")
    peft_model.save_pretrained(adapter)
    peft_model.merge_and_unload().save_pretrained(str(tmp_path / "reference"))
    expected = load_base(str(tmp_path / "reference"))  # in the checkpoint's own names
    cfg = load_eval_config(eval_json(str(tmp_path / "e.json"), hf, "x.tsv", "ai2d_test", str(tmp_path / "out")),
                           adapter=adapter)
    assert cfg.adapter == adapter and cfg.record()["adapter"] == os.path.abspath(adapter)
    merged = _merged_hf_dir(cfg, str(tmp_path / "scratch"))
    tensors = {}
    for name in os.listdir(merged):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(merged, name)))
    changed = [k for k in tensors if "q_proj" in k and not np.array_equal(tensors[k], load_base(hf)[k])]
    assert changed  # the adapter changed the targeted weights
    assert sorted(tensors) == sorted(expected)
    for key, value in tensors.items():
        np.testing.assert_allclose(value, expected[key], atol=1e-6, err_msg=key)
    with pytest.raises(EvalDataError, match="adapter with an MM checkpoint"):
        cfg.ckpt_path = str(tmp_path)
        _merged_hf_dir(cfg, str(tmp_path / "scratch2"))


def load_base(hf: str):
    from safetensors.numpy import load_file

    out = {}
    for name in os.listdir(hf):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(hf, name)))
    return out
