"""data.json validation data (MindSpeed-MM's ``val_dataset`` / ``val_rate``): ``val_rate`` holds
out a deterministic share of the records (HF ``train_test_split(test_size=val_rate, seed)``),
the training split never sees them; ``val_dataset`` is its own file (``val_max_samples`` of it)."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from msmm.config.data_config import DataConfigError, parse_data_config
from msmm.data.build import build_dataloader, has_validation_data, split_records
from tokenizers_for_tests import tiny_tokenizer


def write_records(path, count: int, tag: str) -> None:
    turn = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    path.write_text("".join(json.dumps({"conversations": turn(f"{tag} {i}", f"answer {i}")}) + "\n"
                            for i in range(count)))


def config(tmp_path, **basic):
    write_records(tmp_path / "train.jsonl", 20, "train")
    return parse_data_config({
        "dataset_param": {"basic_parameters": {"template_name": "internvl2_5", "data_path": str(tmp_path / "train.jsonl"),
                                               "cutoff_len": 256, **basic},
                          "tokenizer_config": {"from_pretrained": "in-memory"}},
        "dataloader_param": {"seed": 7, "micro_batch_size": 1, "drop_last": False, "shuffle": False},
    })


def prompts(loader) -> list:
    tok = tiny_tokenizer()
    return [tok.decode(b["input_ids"][0]).split("user\n")[1].split("<|im_end|>")[0] for b in loader]


def test_split_is_a_seeded_permutation():
    records = list(range(10))
    train, val = split_records(records, 0.25, seed=3)
    order = np.random.default_rng(3).permutation(10)
    assert val == order[:3].tolist() and train == order[3:].tolist()  # ceil(0.25 * 10) = 3 held out
    assert split_records(records, 0.25, seed=3) == (train, val)
    assert split_records(records, 0.25, seed=4) != (train, val)


def test_val_rate_holds_out_records_the_training_split_never_sees(tmp_path):
    cfg = config(tmp_path, val_rate=0.2)
    assert has_validation_data(cfg)
    tok = tiny_tokenizer()
    train = prompts(build_dataloader(cfg, tokenizer=tok, split_seed=1234))
    val = prompts(build_dataloader(cfg, tokenizer=tok, split="validation", split_seed=1234))
    assert len(val) == math.ceil(0.2 * 20) and len(train) == 16
    assert sorted(train + val) == sorted(f"train {i}" for i in range(20))
    again = prompts(build_dataloader(cfg, tokenizer=tok, split="validation", split_seed=1234))
    other = prompts(build_dataloader(cfg, tokenizer=tok, split="validation", split_seed=1))
    assert again == val and sorted(other) != sorted(val)


def test_val_dataset_is_its_own_file(tmp_path, caplog):
    write_records(tmp_path / "val.jsonl", 5, "val")
    with caplog.at_level(logging.WARNING, logger="msmm.config"):
        cfg = config(tmp_path, val_dataset=str(tmp_path / "val.jsonl"), val_max_samples=3, val_rate=0.5, repeat_time=2)
    assert "val_rate 0.5: no effect, val_dataset gives the validation data" in caplog.text
    tok = tiny_tokenizer()
    assert prompts(build_dataloader(cfg, tokenizer=tok, split="validation")) == ["val 0", "val 1", "val 2"]
    assert len(prompts(build_dataloader(cfg, tokenizer=tok))) == 40  # all training records, repeat_time 2


def test_validation_keys_are_checked(tmp_path):
    with pytest.raises(DataConfigError, match=r"basic_parameters.val_rate: .* must lie in \[0, 1\), got 1.0"):
        config(tmp_path, val_rate=1.0)
    with pytest.raises(DataConfigError, match="basic_parameters.val_max_samples: limits val_dataset, which is not set"):
        config(tmp_path, val_max_samples=2)
    cfg = config(tmp_path)
    assert not has_validation_data(cfg)
    with pytest.raises(ValueError, match="no validation data: set dataset_param.basic_parameters.val_dataset"):
        build_dataloader(cfg, tokenizer=tiny_tokenizer(), split="validation")


def test_interleaved_train_and_validation_loaders_read_their_own_records(tmp_path):
    """The trainer reads validation micro-batches in the middle of a training epoch."""
    cfg = config(tmp_path, val_rate=0.2)
    tok = tiny_tokenizer()
    train, val = (build_dataloader(cfg, tokenizer=tok, split=s, split_seed=0) for s in ("train", "validation"))
    expected = prompts(build_dataloader(cfg, tokenizer=tok, split_seed=0))
    got_train, got_val, val_it = [], [], iter(val)
    for batch in train:
        got_train += prompts([batch])
        got_val += prompts([next(val_it, batch)]) if len(got_val) < 4 else []
    assert got_train == expected and len(got_val) == 4 and not set(got_val) & set(got_train)
