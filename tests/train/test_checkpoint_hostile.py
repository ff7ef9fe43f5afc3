"""msmm-train against hostile checkpoints (issue 15): a corrupt safetensors payload, metadata.json
or HF file given to --load is one line naming the file (no traceback) before anything is built;
a tracker naming a missing iteration says what is there; a resumed run's model.json must
describe the checkpoint's architecture (stored in every save); leftovers of dead writers are
cleaned at the next save (a live writer's never); a resumed run logs each iteration once."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from msmm.checkpoint import train_state as ckpt
from msmm.train.cli import main
from tests.corrupt_safetensors import CORRUPT

# model_2B.json's shape at a tiny size (should a check regress, msmm-train builds this, not a 2B model)
TINY_MODEL = {
    "model_id": "internvl", "image_token_id": 127,
    "image_encoder": {
        "vision_encoder": {"model_id": "intern_vit", "num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                           "ffn_hidden_size": 64, "image_size": 28, "patch_size": 14, "layernorm_epsilon": 1e-06,
                           "freeze": True},
        "vision_projector": {"model_id": "pixel_shuffle_mlp", "downsample_ratio": 0.5, "freeze": False}},
    "text_decoder": {"model_id": "internlm2", "num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                     "num_query_groups": 2, "ffn_hidden_size": 64, "vocab_size": 128, "layernorm_epsilon": 1e-05,
                     "rotary_base": 1000000.0, "freeze": False},
}


@pytest.fixture
def model_json(tmp_path) -> str:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(TINY_MODEL))
    return str(path)
DATA = {"dataset_param": {"basic_parameters": {"template_name": "internvl2_5", "data_path": "train.jsonl",
                                               "data_folder": ".", "cutoff_len": 64},
                          "tokenizer_config": {"from_pretrained": "tok"}}}


def train(tmp_path, capsys, *extra: str) -> tuple:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(DATA))
    code = main(["--mm-model", str(tmp_path / "model.json"), "--mm-data", str(data), "--micro-batch-size", "1", "--global-batch-size",
                 "1", "--train-iters", "1", "--lr", "1e-3", "--seq-length", "128", *extra])
    return code, capsys.readouterr().err


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def saved(root, iteration: int = 10, **extra) -> str:
    ckpt.save_checkpoint(str(root), ckpt.CheckpointState(iteration, {"w": np.ones((2, 2), np.float32)}, extra=extra))
    return os.path.join(str(root), f"iter_{iteration:07d}", "mp_rank_00")


# ---- items 4 and 11: corrupt files given to --load ---------------------------------------------

@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_payload_is_one_line_naming_the_file(tmp_path, capsys, model_json, case):
    content, message = CORRUPT[case]
    payload = os.path.join(saved(tmp_path / "save"), "model_optim_rng.safetensors")
    with open(payload, "wb") as f:
        f.write(content)
    code, err = train(tmp_path, capsys, "--load", str(tmp_path / "save"))
    assert code == 1
    assert err == f"msmm-train: --load {tmp_path / 'save'}: {payload}: {message}" + err[err.index(message) + len(message):]
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_metadata_missing_iteration_and_corrupt_hf_files(tmp_path, capsys, model_json):
    save = tmp_path / "save"
    shard = saved(save)
    meta = os.path.join(shard, "metadata.json")
    for content, message in ((b'{"iteration": 10,', "line 1: invalid JSON"), (b"{\x80\x81garbage}", "not a JSON text"),
                             (b"[1]", "expected a JSON object")):
        with open(meta, "wb") as f:
            f.write(content)
        code, err = train(tmp_path, capsys, "--load", str(save))
        assert code == 1 and f"msmm-train: --load {save}: {meta}: {message}" in err and "Traceback" not in err, err
    # the tracker names an iteration that is not there: what is there, and where a killed re-save put it
    (save / "latest_checkpointed_iteration.txt").write_text("30")
    code, err = train(tmp_path, capsys, "--load", str(save))
    assert code == 1 and (f"{save / 'latest_checkpointed_iteration.txt'} names iteration 30, but "
                          f"{save / 'iter_0000030'} does not exist ({save} holds iter_0000010)") in err, err
    os.rename(save / "iter_0000010", save / f"iter_0000030.old-{dead_pid()}")
    code, err = train(tmp_path, capsys, "--load", str(save))
    assert code == 1 and "is the iteration an interrupted save moved aside: rename it to iter_0000030" in err, err
    # an HF directory: corrupt config.json, corrupt weights
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{")
    code, err = train(tmp_path, capsys, "--load", str(hf))
    assert code == 1 and f"msmm-train: --load {hf}: {hf / 'config.json'}: line 1: invalid JSON" in err
    (hf / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    content, message = CORRUPT["truncated"]
    (hf / "model.safetensors").write_bytes(content)
    code, err = train(tmp_path, capsys, "--load", str(hf))
    assert code == 1 and f"msmm-train: --load {hf}: {hf / 'model.safetensors'}: {message}" in err
    code, err = train(tmp_path, capsys, "--load", str(tmp_path / "nothing"))
    assert code == 1 and "neither an msmm checkpoint (latest_checkpointed_iteration.txt) nor an HF checkpoint" in err


# ---- item 3: the architecture a checkpoint was saved with ---------------------------------------

def test_model_config_record_and_comparison(tmp_path, model_json):
    from msmm.models.model_config import ModelConfigError, check_same_architecture, load_model_config, model_config_record

    config = load_model_config(model_json)
    record = model_config_record(config)
    assert record["text_decoder"]["rotary_base"] == 1000000.0 and record["text_decoder"]["init_method_std"] == 0.02
    raw = TINY_MODEL

    def variant(**text) -> str:
        changed = json.loads(json.dumps(raw))
        changed["text_decoder"].update(text)
        path = tmp_path / f"model{len(os.listdir(tmp_path))}.json"
        path.write_text(json.dumps(changed))
        return str(path)

    with pytest.raises(ModelConfigError) as err:
        check_same_architecture(record, load_model_config(variant(rotary_base=10000.0, layernorm_epsilon=1e-6)), "ckpt")
    message = str(err.value)
    assert "text_decoder.rotary_base is 10000.0 here, 1000000.0 in the checkpoint" in message
    assert "text_decoder.layernorm_epsilon is 1e-06 here, 1e-05 in the checkpoint" in message
    assert message.startswith(f"{tmp_path}") and "does not describe the model ckpt was saved with" in message
    # what does not change the architecture may differ; a lora block may be added, not dropped
    relaxed = load_model_config(variant(freeze=not raw["text_decoder"].get("freeze", False), hidden_dropout=0.1,
                                        init_method_std=0.01, lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}))
    check_same_architecture(record, relaxed, "ckpt")
    with_lora = model_config_record(relaxed)
    check_same_architecture(with_lora, load_model_config(variant(lora={"r": 4, "lora_alpha": 8})), "ckpt")
    with pytest.raises(ModelConfigError, match=r"text_decoder.lora.lora_alpha is 16 here, 8 in the checkpoint"):
        check_same_architecture(with_lora, load_model_config(variant(lora={"r": 4, "lora_alpha": 16})), "ckpt")
    with pytest.raises(ModelConfigError, match="text_decoder.lora: the checkpoint was trained with a LoRA block"):
        check_same_architecture(with_lora, config, "ckpt")


def test_resume_with_another_architecture_stops_naming_the_key(tmp_path, capsys, model_json):
    from msmm.models.model_config import load_model_config, model_config_record

    record = model_config_record(load_model_config(model_json))
    record["text_decoder"]["rotary_base"] = 10000.0
    saved(tmp_path / "save", model_config=record)
    code, err = train(tmp_path, capsys, "--load", str(tmp_path / "save"))
    assert code == 2 and "Traceback" not in err
    assert (f"msmm-train: {model_json}: does not describe the model {tmp_path / 'save' / 'iter_0000010'} was saved "
            "with (its metadata.json model_config): text_decoder.rotary_base is 1000000.0 here, 10000.0 in the "
            "checkpoint") in err, err


def test_load_of_an_mm_convert_output_checks_its_config_json(tmp_path, model_json):
    """An mm-convert output stores no model.json: its hf_config/config.json's text numbers are
    compared (the same check as --load of an HF directory)."""
    from msmm.models.model_config import ModelConfigError, load_model_config
    from msmm.models.pretrained import check_checkpoint_config

    mm = tmp_path / "mm"
    (mm / "release" / "mp_rank_00").mkdir(parents=True)
    (mm / "latest_checkpointed_iteration.txt").write_text("release")
    (mm / "hf_config").mkdir()
    config = {"model_type": "internvl_chat", "llm_config": {"rope_theta": 10000.0, "rms_norm_eps": 1e-5}}
    (mm / "hf_config" / "config.json").write_text(json.dumps(config))
    model = load_model_config(model_json)
    meta = {"iteration": 0, "release": True, "mm_convert": {}}
    with pytest.raises(ModelConfigError, match=r"text_decoder.rotary_base is 1000000.0, but .*hf_config/config.json "
                                               r"has llm_config.rope_theta = 10000.0"):
        check_checkpoint_config(model, str(mm), meta)
    config["llm_config"]["rope_theta"] = 1000000.0
    (mm / "hf_config" / "config.json").write_text(json.dumps(config))
    assert check_checkpoint_config(model, str(mm), meta) is None
    assert check_checkpoint_config(model, str(mm / "release"), meta) is None  # the release directory itself
    os.remove(mm / "hf_config" / "config.json")  # nothing to compare with: a warning, not silence
    assert "records no model config" in check_checkpoint_config(model, str(mm), meta)


# ---- item 15: leftovers, the log of a resumed run ----------------------------------------------

def test_leftovers_of_dead_writers_are_cleaned_a_live_writers_kept(tmp_path):
    root = tmp_path / "save"
    saved(root, 2)
    dead = dead_pid()
    live = subprocess.Popen(["sleep", "60"])
    try:
        (root / f".iter_0000009.tmp-{dead}" / "mp_rank_00").mkdir(parents=True)
        (root / f".iter_0000008.tmp-{live.pid}" / "mp_rank_00").mkdir(parents=True)
        (root / f"iter_0000002.old-{dead}").mkdir()  # the re-save finished: the old copy goes
        saved(tmp_path / "other", 5)
        os.rename(tmp_path / "other" / "iter_0000005", root / f"iter_0000005.old-{dead}")  # killed between renames
        (root / f".latest_checkpointed_iteration.txt.tmp-{dead}").write_text("9")
        (root / f".latest_checkpointed_iteration.txt.tmp-{live.pid}").write_text("8")
        saved(root, 20)
        assert sorted(os.listdir(root)) == sorted([
            f".iter_0000008.tmp-{live.pid}", f".latest_checkpointed_iteration.txt.tmp-{live.pid}", "iter_0000002",
            "iter_0000005", "iter_0000020", "latest_checkpointed_iteration.txt"])
        assert ckpt.load_checkpoint(str(root)).iteration == 20
        assert ckpt.load_checkpoint(str(root / "iter_0000005")).iteration == 5  # restored, not deleted
    finally:
        live.kill()
        live.wait()


class _Source:
    """Micro-batches of random tokens; the position is saved and restored."""

    def __init__(self):
        self.i = 0

    def __iter__(self):
        while True:
            ids = np.random.default_rng(self.i).integers(0, 16, (1, 6))
            self.i += 1
            yield {"input_ids": ids, "labels": ids}

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def _trainer(save: str, model_config=None):
    from adapters.torch import nn
    from msmm.train.trainer import TrainConfig, Trainer

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(16, 8), nn.Linear(8, 16)

        def forward(self, input_ids):
            return self.head(self.emb(input_ids))

    config = TrainConfig(train_iters=4, global_batch_size=1, save=save, save_interval=2, log_dir=save)
    return Trainer(Tiny(), config, _Source(), model_config=model_config)


def test_every_save_stores_the_model_config_and_a_resumed_run_logs_each_iteration_once(tmp_path):
    save = str(tmp_path / "save")
    record = {"model_id": "tiny", "text_decoder": {"rotary_base": 10000.0}}
    _trainer(save, record).train()
    for it in (2, 4):
        assert ckpt.read_metadata(os.path.join(save, f"iter_{it:07d}"))["model_config"] == record
    log = os.path.join(save, "train_log.jsonl")
    with open(log, "a") as f:
        f.write('{"iteration": 5, "lo')  # a write torn by a kill
    resumed = _trainer(save, record)
    resumed.load(os.path.join(save, "iter_0000002"))
    resumed.train()
    with open(log) as f:
        assert [json.loads(line)["iteration"] for line in f] == [1, 2, 3, 4]
    assert sorted(n for n in os.listdir(save) if "iter" in n) == ["iter_0000002", "iter_0000004",
                                                                  "latest_checkpointed_iteration.txt"]
