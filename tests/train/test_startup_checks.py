"""msmm-train start-up checks of data.json (issue 15): a typo in a key and a cutoff_len larger
than --seq-length stop before anything is built, naming the file, the key and the argument."""
import json

from msmm.config.data_config import parse_data_config
from msmm.train.cli import main
from msmm.config.train_args import parse_train_args
from msmm.train.startup_checks import check_cutoff_len, load_checked_data_config

DATA = {"dataset_param": {"basic_parameters": {"template_name": "internvl2_5", "data_path": "train.jsonl",
                                               "data_folder": ".", "cutoff_len": 211},
                          "tokenizer_config": {"from_pretrained": "tok"}}}
ARGS = ["--mm-model", "does-not-exist/model.json", "--micro-batch-size", "2", "--global-batch-size", "2",
        "--train-iters", "1", "--lr", "1e-3", "--seq-length", "128"]


def _write(tmp_path, raw):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_cutoff_len_above_seq_length_stops_at_start_up(tmp_path, capsys):
    path = _write(tmp_path, DATA)
    assert main(ARGS + ["--mm-data", path]) == 2  # before model.json (which does not exist) is read
    err = capsys.readouterr().err
    assert f"msmm-train: {path}: dataset_param.basic_parameters.cutoff_len: 211 is more than --seq-length 128" in err


def test_cutoff_len_unset_becomes_seq_length():
    raw = json.loads(json.dumps(DATA))
    del raw["dataset_param"]["basic_parameters"]["cutoff_len"]
    raw["dataset_param"]["tokenizer_config"]["model_max_length"] = 4096
    config = parse_data_config(raw)
    check_cutoff_len(config, 128)
    assert config.dataset_param.basic_parameters.cutoff_len == 128
    check_cutoff_len(parse_data_config(DATA), None)  # --variable-seq-lengths: nothing to check


def test_data_json_typo_stops_unless_allowed(tmp_path, capsys):
    raw = json.loads(json.dumps(DATA))
    raw["dataset_param"]["basic_parameters"].update(cutoff_len=64, strcit=True)
    path = _write(tmp_path, raw)
    assert main(ARGS + ["--mm-data", path]) == 2
    err = capsys.readouterr().err
    assert f"msmm-train: {path}: dataset_param.basic_parameters.strcit: unknown key (did you mean 'strict'?)" in err
    # --allow-unknown-keys: a warning, and the config loads
    config = load_checked_data_config(parse_train_args(ARGS + ["--mm-data", path, "--allow-unknown-keys"]))
    assert config.dataset_param.basic_parameters.strict is False


def test_packing_with_per_sample_loss_stops_at_start_up(tmp_path, capsys):
    """--calculate-per-sample-loss averages over rows; a packed row holds several samples."""
    raw = json.loads(json.dumps(DATA))
    raw["dataset_param"]["basic_parameters"]["cutoff_len"] = 64
    raw["dataloader_param"] = {"packing": True}
    path = _write(tmp_path, raw)
    assert main(ARGS + ["--mm-data", path, "--calculate-per-sample-loss"]) == 2
    assert f"msmm-train: {path}: dataloader_param.packing: --calculate-per-sample-loss averages over the rows" in \
        capsys.readouterr().err
    load_checked_data_config(parse_train_args(ARGS + ["--mm-data", path, "--calculate-per-token-loss"]))
