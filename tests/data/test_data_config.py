"""data.json validation: the seeds' shapes load; every error names the file and the key."""
import json

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


def test_unknown_key_warns_with_suggestion(caplog):
    parse_data_config(_with(INTERNVL, "dataset_param.max_dynamic_pach", 3))
    assert "dataset_param.max_dynamic_pach: unknown key" in caplog.text
    assert "did you mean 'max_dynamic_patch'" in caplog.text


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
