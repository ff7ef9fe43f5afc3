"""mm-convert against hostile inputs and outputs (issue 15): an output directory holding a
training checkpoint or unrelated files is refused, a previous output is replaced only with
``--cfg.overwrite True`` and atomically, ``mm_to_hf`` into its own source is refused, a
config.json that contradicts the tensors is refused, and corrupt safetensors files are
errors that name the file. Nothing is written when a command fails."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import tiny_hf
from msmm.checkpoint.train_state import CheckpointState, save_checkpoint
from msmm.convert.cli import main
from tests.corrupt_safetensors import CORRUPT

CONVERTER = "Qwen2VLConverter"


def run(capsys, *args: str) -> tuple:
    code = main([CONVERTER, *args])
    captured = capsys.readouterr()
    return code, captured.err


def tree(path) -> dict:
    """{relative path: bytes} of every file below ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> str:
    return tiny_hf.save(tiny_hf.qwen2_vl(), str(tmp_path_factory.mktemp("hf") / "hf"))


def hf_to_mm(mm_dir, hf_dir, *extra: str) -> list:
    return ["hf_to_mm", "--cfg.mm_dir", str(mm_dir), "--cfg.hf_config.hf_dir", str(hf_dir), *extra]


# ---- item 1: hf_to_mm / resplit never write into a training checkpoint ---------------------------

def test_hf_to_mm_refuses_a_training_save_dir(tmp_path, hf, capsys):
    save = tmp_path / "save"
    save_checkpoint(str(save), CheckpointState(800, {"w": np.ones(2, np.float32)}))
    before = tree(save)
    code, err = run(capsys, *hf_to_mm(save, hf, "--cfg.overwrite", "True"))
    assert code == 1
    assert (f"mm_dir {save} holds a training checkpoint (latest_checkpointed_iteration.txt names iteration '800'; "
            "iter_0000800)") in err
    assert tree(save) == before  # tracker still "800", nothing added
    # iter_* directories alone (the tracker lost) are a training checkpoint too
    os.remove(save / "latest_checkpointed_iteration.txt")
    code, err = run(capsys, *hf_to_mm(save, hf, "--cfg.overwrite", "True"))
    assert code == 1 and "holds a training checkpoint (iter_0000800)" in err


def test_hf_to_mm_refuses_unrelated_content_and_needs_overwrite_for_its_own(tmp_path, hf, capsys):
    mm = tmp_path / "mm"
    mm.mkdir()
    (mm / "notes.txt").write_text("mine")
    code, err = run(capsys, *hf_to_mm(mm, hf, "--cfg.overwrite", "True"))
    assert code == 1 and f"mm_dir {mm} holds {mm / 'notes.txt'}, which is not part of an mm-convert output" in err
    assert sorted(os.listdir(mm)) == ["notes.txt"]
    os.remove(mm / "notes.txt")  # an empty directory is fine
    assert run(capsys, *hf_to_mm(mm, hf))[0] == 0
    first = tree(mm)
    code, err = run(capsys, *hf_to_mm(mm, hf, "--cfg.parallel_config.tp_size", "2"))
    assert code == 1 and f"mm_dir {mm} exists and is a previous mm-convert output; remove it or pass " \
                         "--cfg.overwrite True" in err
    assert tree(mm) == first
    assert run(capsys, *hf_to_mm(mm, hf, "--cfg.parallel_config.tp_size", "2", "--cfg.overwrite", "True"))[0] == 0
    assert sorted(os.listdir(mm / "release")) == ["mp_rank_00", "mp_rank_01"]  # replaced as a whole
    assert (mm / "latest_checkpointed_iteration.txt").read_text() == "release"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("mm.")]  # no temporary left
    # the source inside the output, or the output inside the source
    code, err = run(capsys, *hf_to_mm(os.path.join(hf, "mm"), hf))
    assert code == 1 and f"mm_dir {os.path.join(hf, 'mm')} and hf_config.hf_dir {hf} are the same directory" in err
    assert not os.path.exists(os.path.join(hf, "mm"))


def test_a_failing_hf_to_mm_leaves_the_previous_output(tmp_path, hf, capsys, monkeypatch):
    mm = tmp_path / "mm"
    assert run(capsys, *hf_to_mm(mm, hf))[0] == 0
    before = tree(mm)
    import msmm.convert.converters as converters

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(converters, "copy_side_files", fail)  # after the weights are written
    with pytest.raises(OSError, match="disk full"):
        main([CONVERTER, *hf_to_mm(mm, hf, "--cfg.parallel_config.tp_size", "2", "--cfg.overwrite", "True")])
    assert tree(mm) == before
    assert sorted(os.listdir(tmp_path)) == ["mm"]


def test_resplit_target_rules(tmp_path, hf, capsys):
    mm, save = tmp_path / "mm", tmp_path / "save"
    assert run(capsys, *hf_to_mm(mm, hf))[0] == 0
    save_checkpoint(str(save), CheckpointState(5, {"w": np.ones(2, np.float32)}))
    before = tree(save)
    resplit = ["resplit", "--cfg.source_dir", str(mm), "--cfg.target_parallel_config.tp_size", "2"]
    code, err = run(capsys, *resplit, "--cfg.target_dir", str(save), "--cfg.overwrite", "True")
    assert code == 1 and f"target_dir {save} holds a training checkpoint" in err and tree(save) == before
    code, err = run(capsys, *resplit, "--cfg.target_dir", str(mm), "--cfg.overwrite", "True")
    assert code == 1 and f"target_dir {mm} and source_dir {mm} are the same directory" in err
    assert run(capsys, *resplit, "--cfg.target_dir", str(tmp_path / "mm2"))[0] == 0
    code, err = run(capsys, *resplit, "--cfg.target_dir", str(tmp_path / "mm2"))
    assert code == 1 and "is a previous mm-convert output; remove it or pass --cfg.overwrite True" in err
    assert run(capsys, *resplit, "--cfg.target_dir", str(tmp_path / "mm2"), "--cfg.overwrite", "True")[0] == 0


# ---- item 2: mm_to_hf never writes into its sources; replaces only with overwrite ---------------

def test_mm_to_hf_output_rules(tmp_path, hf, capsys):
    mm = tmp_path / "mm"
    assert run(capsys, *hf_to_mm(mm, hf))[0] == 0
    hf_copy = tmp_path / "hf_copy"
    hf_copy.mkdir()
    for name in os.listdir(hf):
        (hf_copy / name).write_bytes(open(os.path.join(hf, name), "rb").read())
    before = tree(hf_copy)
    mm_to_hf = ["mm_to_hf", "--cfg.mm_dir", str(mm)]
    # the base directory itself: refused before anything is written (it used to overwrite
    # model.safetensors, then fail with shutil.SameFileError)
    for out, name, source in ((hf_copy, "hf_config.hf_dir", hf_copy), (hf_copy / "sub", "hf_config.hf_dir", hf_copy),
                              (tmp_path, "mm_dir", mm), (mm / "hf", "mm_dir", mm)):
        code, err = run(capsys, *mm_to_hf, "--cfg.hf_config.hf_dir", str(hf_copy), "--cfg.save_hf_dir", str(out),
                        "--cfg.overwrite", "True")
        assert code == 1 and f"save_hf_dir {out} and {name} {source} are the same directory or one contains" in err
    assert tree(hf_copy) == before and not os.path.exists(mm / "hf")
    # mm_dir/hf_config (the default hf_dir) counts as a source too
    code, err = run(capsys, *mm_to_hf, "--cfg.save_hf_dir", str(mm / "hf_config"), "--cfg.overwrite", "True")
    assert code == 1 and "are the same directory or one contains the other" in err
    # a non-empty output: refused, then replaced as a whole with overwrite (no stale files mixed in)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00001-of-00009.safetensors").write_bytes(b"stale")
    code, err = run(capsys, *mm_to_hf, "--cfg.save_hf_dir", str(out))
    assert code == 1 and f"save_hf_dir {out} exists and is not empty; remove it or pass --cfg.overwrite True" in err
    assert run(capsys, *mm_to_hf, "--cfg.save_hf_dir", str(out), "--cfg.overwrite", "True")[0] == 0
    assert "model-00001-of-00009.safetensors" not in os.listdir(out)
    got, want = tiny_hf.read_all(str(out)), tiny_hf.read_all(hf)
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.")]
    # a training checkpoint is never replaced, not even with overwrite
    save = tmp_path / "save"
    save_checkpoint(str(save), CheckpointState(3, {"w": np.ones(2, np.float32)}))
    code, err = run(capsys, *mm_to_hf, "--cfg.save_hf_dir", str(save), "--cfg.overwrite", "True")
    assert code == 1 and f"save_hf_dir {save} holds a training checkpoint" in err


# ---- item 5: config.json numbers against the tensors --------------------------------------------

@pytest.mark.parametrize("where, key, value, expected", [
    ("text_config", "hidden_size", -64, "text_config.hidden_size = -64, but tensor 'model.embed_tokens.weight'"),
    ("text_config", "vocab_size", 120, "text_config.vocab_size = 120, but tensor 'model.embed_tokens.weight'"),
    ("text_config", "num_key_value_heads", 4,
     "text_config.num_key_value_heads * head_dim (text_config.hidden_size / text_config.num_attention_heads) = 4 * 8 = "
     "32, but tensor 'model.layers.0.self_attn.k_proj.weight'"),
    ("text_config", "intermediate_size", 48, "text_config.intermediate_size = 48, but tensor "
                                             "'model.layers.0.mlp.down_proj.weight'"),
    ("text_config", "head_dim", 16, "text_config.num_key_value_heads * text_config.head_dim = 2 * 16 = 32, but tensor "
                                    "'model.layers.0.self_attn.k_proj.weight'"),
    ("text_config", "num_hidden_layers", 3, "unexpected key model.layers.3.*"),
    ("text_config", "num_hidden_layers", 5, "missing key model.layers.4.*"),
])
def test_config_json_that_contradicts_the_tensors_is_refused(tmp_path, hf, capsys, where, key, value, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(hf):
        os.link(os.path.join(hf, name), bad / name)
    config = json.load(open(os.path.join(hf, "config.json")))
    config[where][key] = value
    os.remove(bad / "config.json")
    (bad / "config.json").write_text(json.dumps(config))
    code, err = run(capsys, *hf_to_mm(tmp_path / "mm", bad))
    assert code == 1 and expected in err, err
    assert not os.path.exists(tmp_path / "mm")
    if key in ("hidden_size", "vocab_size"):
        assert str(bad / "config.json") in err and ".safetensors" in err  # the file of each side
    # mm_to_hf with that config.json is refused the same way
    assert run(capsys, *hf_to_mm(tmp_path / "good", hf))[0] == 0
    code, err = run(capsys, "mm_to_hf", "--cfg.mm_dir", str(tmp_path / "good"), "--cfg.hf_config.hf_dir", str(bad),
                    "--cfg.save_hf_dir", str(tmp_path / "out"))
    assert code == 1 and (expected.split(" but ")[0] if "layers" not in expected else "model.layers.") in err, err
    assert not os.path.exists(tmp_path / "out")


# ---- item 4: corrupt safetensors files ---------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_safetensors_is_an_error_naming_the_file(tmp_path, capsys, case):
    content, message = CORRUPT[case]
    bad = tmp_path / "hf"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    (bad / "model.safetensors").write_bytes(content)
    code, err = run(capsys, *hf_to_mm(tmp_path / "mm", bad))
    assert code == 1, err
    assert f"mm-convert {CONVERTER} hf_to_mm: error: {bad / 'model.safetensors'}: {message}" in err, err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "mm")
