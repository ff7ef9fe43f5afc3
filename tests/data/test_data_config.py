"""data.json validation: the seeds' shapes load; every error names the file and the key."""
import json
import logging

import pytest

from msmm.config.data_config import DataConfigError, load_data_config, parse_data_config

INTERNVL = {
    "dataset_param": {
        "dataset_type": "multimodal",
        "basic_parameters": {
            "template_name": "internlm2-chat",
            "data_path": "dataset/playground/opensource/ai2d_train_12k.jsonl",
            "data_folder": "dataset/playground/data/ai2d",
        },
        "preprocess_parameters": {"image_reader_type": "torchvision"},
        "tokenizer_config": {"from_pretrained": "OpenGVLab/InternVL2-2B", "model_max_length": 4096},
        "image_size": 448,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 6,
    },
    "dataloader_param": {"num_workers": 4, "collate_param": {"model_name": "internvl", "pad_id": 2}},
}
QWEN2VL = {
    "dataset_param": {
        "dataset_type": "huggingface",
        "preprocess_parameters": {"model_name_or_path": "./ckpt/hf_path/Qwen2-VL-7B-Instruct"},
        "basic_parameters": {
            "template": "qwen2vl",
            "dataset_dir": "./data",
            "dataset": "./data/mllm_format_llava_instruct_data.json",
            "cache_dir": "./data/cache_dir",
        },
    }
}


def _with(base, dotted, value):
    raw = json.loads(json.dumps(base))
    node = raw
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


def test_seed_shapes_load(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(INTERNVL))
    config = load_data_config(str(path))
    assert config.template == "internlm2-chat" and config.model_family == "internvl"
    assert config.dataset_param.basic_parameters.annotation_path.endswith("ai2d_train_12k.jsonl")
    assert config.dataset_param.basic_parameters.media_root == "dataset/playground/data/ai2d"
    assert config.dataset_param.max_dynamic_patch == 6
    assert config.dataloader_param.collate_param.pad_id == 2

    qwen = parse_data_config(QWEN2VL)
    assert qwen.model_family == "qwen2vl" and qwen.tokenizer_path.endswith("Qwen2-VL-7B-Instruct")
    assert qwen.dataset_param.basic_parameters.media_root == "./data"


@pytest.mark.parametrize("dotted, close", [
    ("dataset_param.basic_parameters.strcit", "strict"),
    ("dataset_param.basic_parameters.cutof_len", "cutoff_len"),
    ("dataloader_param.shufle", "shuffle"),
    ("dataset_param.max_dynamic_pach", "max_dynamic_patch"),
])
def test_unknown_key_is_an_error_with_suggestion(tmp_path, caplog, dotted, close):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(_with(INTERNVL, dotted, True)))
    with pytest.raises(DataConfigError) as info:
        load_data_config(str(path))
    assert str(info.value).startswith(f"{path}: {dotted}: unknown key (did you mean {close!r}?)")
    assert "--allow-unknown-keys" in str(info.value)
    # the documented opt-out: a warning with the same suggestion, the key ignored
    config = load_data_config(str(path), allow_unknown_keys=True)
    assert f"{dotted}: unknown key, ignored (did you mean {close!r}?)" in caplog.text
    assert config.dataset_param.basic_parameters.strict is False


def test_mindspeed_mm_keys_msmm_does_not_use_are_logged_not_errors(caplog):
    """The keys of MindSpeed-MM's published data.json files (examples/internvl3/data_8B.json,
    examples/mindspore/qwen2vl/data_7b.json upstream) load; relocated ones say where msmm reads them."""
    raw = _with(INTERNVL, "dataloader_param.pin_memory", True)
    raw["dataset_param"]["tokenizer_config"].update(hub_backend="hf", autotokenizer_name="AutoTokenizer")
    raw["dataset_param"].update(use_text_processer=True, group_by_length=True, down_sample_ratio=0.5)
    raw["dataset_param"]["preprocess_parameters"]["train_pipeline"] = {"image": []}
    raw["dataloader_param"].update(dataloader_mode="sampler", sampler_type="BaseRandomBatchSampler")
    qwen = _with(QWEN2VL, "dataset_param.basic_parameters.train_on_prompt", False)
    qwen["dataset_param"]["preprocess_parameters"].update(use_fast_tokenizer=True, split_special_tokens=False)
    qwen["dataset_param"]["basic_parameters"].update(mask_history=False, preprocessing_num_workers=16, tool_format=None)
    qwen["dataset_param"]["attr"] = {"images": "images", "videos": None, "messages": "messages", "observation_tag": None,
                                     "function_tag": None}
    qwen["dataloader_param"] = {"collate_param": {"model_name": "qwen2vl", "ignore_pad_token_for_loss": True}}
    with caplog.at_level(logging.INFO, logger="msmm.config"):
        parse_data_config(raw)
        assert parse_data_config(qwen).dataset_param.attr.videos is None
    assert "dataset_param.tokenizer_config.hub_backend: a MindSpeed-MM key msmm does not use" in caplog.text
    assert "dataset_param.group_by_length: a MindSpeed-MM key msmm reads as dataloader_param.group_by_length" in caplog.text
    assert "unknown key" not in caplog.text


def test_repository_data_json_files_load(caplog):
    import glob
    import os

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = glob.glob(os.path.join(repo, "examples", "*", "data*.json"))
    assert len(files) >= 6
    for path in files:
        load_data_config(path)


@pytest.mark.parametrize(
    "base, dotted, value, message",
    [
        (INTERNVL, "dataset_param.basic_parameters", KeyError, "dataset_param.basic_parameters: required key is missing"),
        (INTERNVL, "dataset_param.basic_parameters.data_path", KeyError, "dataset_param.basic_parameters.data_path: set data_path"),
        (INTERNVL, "dataset_param.basic_parameters.data_path", 3, "dataset_param.basic_parameters.data_path: expected str, got int"),
        (INTERNVL, "dataset_param.basic_parameters.template_name", "chatml", "dataset_param.basic_parameters.template_name: unknown template 'chatml'"),
        (INTERNVL, "dataset_param.max_dynamic_patch", 0, "dataset_param.max_dynamic_patch: 0 is smaller than the matching minimum 1"),
        (INTERNVL, "dataset_param.use_thumbnail", "yes", "dataset_param.use_thumbnail: expected bool, got str"),
        (INTERNVL, "dataset_param.image_size", 450, "dataset_param.image_size: 450 is not a multiple of patch_size 14"),
        (INTERNVL, "dataset_param.sampling_method", "fpsx", "dataset_param.sampling_method: 'fpsx'"),
        (INTERNVL, "dataset_param.tokenizer_config.from_pretrained", KeyError, "dataset_param.tokenizer_config.from_pretrained: required"),
        (INTERNVL, "dataloader_param.collate_param", [], "dataloader_param.collate_param: expected an object, got list"),
        (INTERNVL, "dataloader_param.collate_param.model_name", "blip", "dataloader_param.collate_param.model_name: unknown model 'blip'"),
        (INTERNVL, "dataloader_param.num_workers", -1, "dataloader_param.num_workers: must be >= 0"),
        (QWEN2VL, "dataset_param.preprocess_parameters.image_max_pixels", 10, "dataset_param.preprocess_parameters.image_max_pixels: 10 is smaller"),
        (QWEN2VL, "dataset_param.basic_parameters.data_path", "x.jsonl", "dataset_param.basic_parameters.dataset: set only one"),
    ],
)
def test_errors_name_the_key(base, dotted, value, message):
    with pytest.raises(DataConfigError) as info:
        parse_data_config(_with(base, dotted, value), source="cfg/data.json")
    assert str(info.value).startswith("cfg/data.json: ")
    assert message in str(info.value)


def test_malformed_file_names_the_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{\n  "dataset_param": {\n    "basic_parameters": {,\n}')
    with pytest.raises(DataConfigError, match=rf"{path}:3: malformed json"):
        load_data_config(str(path))


def test_mindspeed_packing_switches(caplog):
    """MindSpeed-MM packs with attr.packing; neat_packing keeps the samples' attention apart,
    which is msmm's packing; without it (attention across samples) msmm refuses."""
    neat = _with(_with(QWEN2VL, "dataset_param.attr", {"packing": True}),
                 "dataset_param.basic_parameters.neat_packing", True)
    assert parse_data_config(neat).dataloader_param.packing
    with pytest.raises(DataConfigError, match=r"dataset_param.attr.packing: packing with attention across the packed "
                                              r"samples \(MindSpeed-MM without neat_packing\) is not implemented"):
        parse_data_config(_with(QWEN2VL, "dataset_param.attr", {"packing": True}))
    with caplog.at_level(logging.INFO, logger="msmm.config"):
        config = parse_data_config(_with(QWEN2VL, "dataset_param.basic_parameters.neat_packing", True))
    assert not config.dataloader_param.packing
    assert "neat_packing: no effect without dataset_param.attr.packing (as in MindSpeed-MM)" in caplog.text
