"""Safetensors reading (bf16, shards) and the loader's errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from msmm.checkpoint.hf import weight_files as checkpoint_files
from msmm.checkpoint.safetensors import read_arrays as read_safetensors_file
from msmm.models import load_hf_weights as load_hf_checkpoint
from msmm.models.text import Qwen2Decoder, qwen2_config_from_hf
from test_text_decoders import BASE, hf_model


def test_bf16_is_widened_exactly(tmp_path):
    t = {"a": torch.randn(4, 5).to(torch.bfloat16), "b": torch.arange(6, dtype=torch.int64).reshape(2, 3)}
    path = str(tmp_path / "x.safetensors")
    save_torch_file(t, path)
    arrays = read_safetensors_file(path)
    np.testing.assert_array_equal(arrays["a"], t["a"].float().numpy())
    assert arrays["a"].dtype == np.float32
    np.testing.assert_array_equal(arrays["b"], t["b"].numpy())


def test_bf16_checkpoint_loads_into_fp32_model(tmp_path):
    ref = hf_model("qwen2", BASE).to(torch.bfloat16)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    model = Qwen2Decoder(qwen2_config_from_hf(BASE))
    load_hf_checkpoint(model, str(tmp_path), "qwen2")
    ours = model.state_dict()
    for name, tensor in ref.state_dict().items():
        assert torch.equal(ours[name], tensor.float()), name


def _saved(tmp_path) -> str:
    hf_model("qwen2", BASE).save_pretrained(tmp_path, safe_serialization=True)
    return str(tmp_path / "model.safetensors")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    path = _saved(tmp_path)
    arrays = read_safetensors_file(path)
    arrays["model.layers.0.mlp.extra.weight"] = np.zeros(2, np.float32)
    del arrays["model.norm.weight"]
    save_file(arrays, path)
    with pytest.raises(KeyError) as err:
        load_hf_checkpoint(Qwen2Decoder(qwen2_config_from_hf(BASE)), str(tmp_path), "qwen2")
    assert "model.norm.weight" in str(err.value) and "model.layers.0.mlp.extra.weight" in str(err.value)


def test_shape_mismatch_names_file_and_key(tmp_path):
    _saved(tmp_path)
    model = Qwen2Decoder(qwen2_config_from_hf(dict(BASE, intermediate_size=64)))
    with pytest.raises(ValueError, match=r"model\.safetensors: 'model\.layers\.0\.mlp\.down_proj\.weight' has shape"):
        load_hf_checkpoint(model, str(tmp_path), "qwen2")


def test_index_naming_a_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors"):
        checkpoint_files(str(tmp_path))


def test_unknown_family_and_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors.index.json or model.safetensors"):
        checkpoint_files(str(tmp_path))
    path = _saved(tmp_path)
    with pytest.raises(ValueError, match="unknown checkpoint family 'gpt5'"):
        load_hf_checkpoint(Qwen2Decoder(qwen2_config_from_hf(BASE)), os.path.dirname(path), "gpt5")
