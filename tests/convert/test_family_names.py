"""One rename table per family (``msmm.checkpoint.names``) serves loading, mm-convert and the
PEFT files: for every family and layout, the names ``hf_to_mm`` writes are the parameter
names of the model msmm builds from the same config.json, and that table maps the model's
names back to exactly the HF checkpoint's keys. So the model files and the converter cannot
drift apart again."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import tiny_hf
from msmm.checkpoint.hf import load_config, read_hf_tensors
from msmm.checkpoint.mm import read_mm
from msmm.checkpoint.safetensors import Tensor
from msmm.convert.cli import main
from msmm.models import pretrained
from msmm.registry import FAMILIES, family_of_hf_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))  # test_internvl's remote layout


def _internvl_remote(directory: str) -> str:
    from test_internvl import remote_config, to_remote_layout

    model = tiny_hf.internvl()
    native = tiny_hf.save(model, directory + "_native")
    state = {k: v.numpy() for k, v in tiny_hf.read_all(native).items()}
    os.makedirs(directory)
    save_file({k: np.ascontiguousarray(v) for k, v in to_remote_layout(state).items()},
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    config = remote_config(model.config, dict(tiny_hf.TEXT, model_type="qwen2", architectures=["Qwen2ForCausalLM"]))
    config.update(model_type="internvl_chat", image_token_id=tiny_hf.IMAGE)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory


CASES = {
    "qwen2_vl": lambda d: tiny_hf.save(tiny_hf.qwen2_vl("qwen2_vl"), d),
    "qwen2_5_vl": lambda d: tiny_hf.save(tiny_hf.qwen2_vl("qwen2_5_vl"), d),
    "qwen2_vl tied": lambda d: tiny_hf.save(tiny_hf.qwen2_vl("qwen2_vl", tie=True), d),
    "internvl": lambda d: tiny_hf.save(tiny_hf.internvl(qk_norm=True), d),
    "internvl llama text": lambda d: tiny_hf.save(tiny_hf.internvl(text_model_type="llama"), d),
    "internvl remote code": _internvl_remote,
    "llava": lambda d: tiny_hf.save(tiny_hf.llava(), d),
}


def test_every_family_of_the_registry_has_a_case():
    assert set(FAMILIES) <= {name.split()[0] for name in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_to_mm_writes_the_models_names_and_the_table_maps_them_back(case, tmp_path):
    hf = CASES[case](str(tmp_path / "hf"))
    config = load_config(hf)
    spec = family_of_hf_config(config)
    assert main([spec.converter, "hf_to_mm", "--cfg.mm_dir", str(tmp_path / "mm"),
                 "--cfg.hf_config.hf_dir", hf]) == 0
    written, _, _ = read_mm(str(tmp_path / "mm"))

    model = pretrained.model_file(spec).from_hf_config(config, image_token_id=tiny_hf.IMAGE)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    unused = pretrained._unused(model, spec)
    tied = set(pretrained._tied_names(model))
    built = {name for name in written if not (unused is not None and unused.search(name))}
    assert built == set(expected) - (tied - set(written)), case
    assert all(tuple(written[name].shape) == expected[name] for name in built)

    layout, text_family = spec.hf_layout(config), spec.text_family(config)
    fake = {name: Tensor("F32", shape, lambda: None, name) for name, shape in expected.items()}
    to_hf = spec.naming.to_hf(fake, layout, text_family, tie_word_embeddings=bool(tied))
    hf_keys = set(read_hf_tensors(hf))
    not_built = {key for key in hf_keys
                 if unused is not None and unused.search(spec.naming.mm_name(key, layout, text_family) or "")}
    assert set(to_hf) == hf_keys - not_built, case
