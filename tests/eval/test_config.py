"""MindSpeed-MM's evaluate json as published (architecture blocks, HF generation keys with
nulls, --load for the MM checkpoint), msmm's model block, and clear errors."""
from __future__ import annotations

import json
import os

import pytest

from msmm.eval.cli import parse_args
from msmm.eval.config import EvalConfigError, load_eval_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hf_dir(path, model_type="qwen2_5_vl") -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"model_type": model_type, "vision_config": {"patch_size": 14, "spatial_merge_size": 2}}, f)
    return str(path)


def published_qwen25(tmp_path, hf: str) -> dict:
    """The shape of MindSpeed-MM's examples/qwen2.5vl/evaluate_qwen2_5_vl_7b.json."""
    return {
        "model_id": "Qwen2VlPipeline", "img_context_token_id": 151655,
        "image_encoder": {"vision_encoder": {"model_id": "qwen2vit", "num_layers": 32, "fullatt_block_indexes": [7, 15]},
                          "vision_projector": {"model_id": "lnmlp"}},
        "text_decoder": {"model_id": "qwen2_5_lm", "num_layers": 28, "rope_scaling": None},
        "text_encoder": None, "video_encoder": None, "dtype": "bf16", "device": "npu",
        "tokenizer": {"hub_backend": "hf", "autotokenizer_name": "AutoTokenizer", "from_pretrained": hf},
        "generation_config": {"bos_token_id": 151643, "do_sample": True, "kv_cache": True, "max_length": 20,
                              "min_new_tokens": None, "constraints": None, "repetition_penalty": 1.05,
                              "eos_token_id": [151645, 151643], "max_new_tokens": 256, "pad_token_id": 151643,
                              "temperature": 0.1, "top_k": 1, "top_p": 0.001, "stop_strings": None},
        "patch": {"infer_fa": True}, "min_pixels": 1003520, "max_pixels": 12845056,
        "dataset_path": "./AI2D_TEST.tsv", "evaluation_dataset": "ai2d_test", "evaluation_model": "qwen2_vl_7b",
        "result_output_path": "./evaluation_outputs/",
    }


def write(tmp_path, cfg, name="evaluate.json") -> str:
    path = str(tmp_path / name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def test_published_qwen2_5_vl_json(tmp_path):
    hf = hf_dir(tmp_path / "Qwen2.5-VL-7B-Instruct")
    mm = tmp_path / "mm"
    mm.mkdir()
    cfg = load_eval_config(write(tmp_path, published_qwen25(tmp_path, hf)), load=str(mm))
    assert cfg.family == "qwen2_5_vl"  # evaluation_model says qwen2_vl; the text decoder says 2.5
    assert (cfg.hf_dir, cfg.tokenizer_path, cfg.ckpt_path) == (hf, hf, str(mm))
    assert cfg.generation == {"max_new_tokens": 256, "do_sample": True, "temperature": 0.1, "top_k": 1,
                              "top_p": 0.001, "repetition_penalty": 1.05}
    assert cfg.stop_token_ids == [151645, 151643] and cfg.pad_token_id == 151643
    assert (cfg.min_pixels, cfg.max_pixels, cfg.dataset, cfg.model_name) == (1003520, 12845056, "ai2d_test", "qwen2_vl_7b")


def test_published_internvl_pickle_is_refused_and_families_from_names(tmp_path):
    hf = hf_dir(tmp_path / "InternVL2-8B", "internvl_chat")
    pt = tmp_path / "model_optim_rng.pt"
    pt.write_bytes(b"pickle")
    base = {"model_id": "InternVLPipeline", "from_pretrained": str(pt), "dataset_path": "x.tsv",
            "evaluation_dataset": "mmmu_dev_val", "evaluation_model": "internvl2_8b", "template": "internlm2-chat",
            "result_output_path": "out", "tokenizer": {"from_pretrained": hf}}
    with pytest.raises(EvalConfigError, match="is a file \\(a torch pickle\\); msmm does not unpickle"):
        load_eval_config(write(tmp_path, base))
    cfg = load_eval_config(write(tmp_path, {**base, "from_pretrained": str(tmp_path)}))  # an MM dir
    assert (cfg.family, cfg.ckpt_path, cfg.template) == ("internvl", str(tmp_path), "internlm2-chat")
    llava = {**base, "model_id": "llava", "evaluation_model": "llava_v1.5_7b"}
    llava.pop("from_pretrained")
    assert load_eval_config(write(tmp_path, llava)).family == "llava"


@pytest.mark.parametrize("names, family", [
    ({"evaluation_model": "InternVL2-8B"}, "internvl"),
    ({"evaluation_model": "qwen2vl_7b"}, "qwen2_vl"),
    ({"evaluation_model": "Qwen2.5-VL-7B"}, "qwen2_5_vl"),
    ({"evaluation_model": "m", "model_id": "Qwen2VlPipeline"}, "qwen2_vl"),
    ({"evaluation_model": "m", "model_id": "Qwen2VlPipeline", "text_decoder": {"model_id": "qwen2_5_lm"}}, "qwen2_5_vl"),
    ({"evaluation_model": "llava-1.5-7b"}, "llava"),
])
def test_family_from_names_follows_the_registry(tmp_path, names, family):
    """Without model.family, the longest registry name or alias (msmm.registry) that starts
    evaluation_model, else MindSpeed-MM's model_id, names the family."""
    from msmm.registry import get_family

    cfg = {"dataset_path": "x.tsv", "evaluation_dataset": "ai2d_test", "result_output_path": "out",
           "tokenizer": {"from_pretrained": hf_dir(tmp_path / "hf")}, **names}
    assert load_eval_config(write(tmp_path, cfg)).family == get_family(family).name == family


@pytest.mark.parametrize("change, message", [
    ({"evaluation_dataset": "mmbench"}, "evaluation_dataset must be one of"),
    ({"dataset_path": None}, "dataset_path is required"),
    ({"model": None, "evaluation_model": "mystery", "model_id": "Other"}, "cannot tell the model family"),
    ({"model": {"family": "internvl", "from_pretrained": "nowhere"}}, "holds no config.json"),
    ({"model": {"family": "internvl", "weights": "x"}}, "model.weights: unknown key"),
    ({"prompt_style": "fancy"}, "prompt_style must be one of"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"generation_config": {"eos_token_id": "</s>"}}, "eos_token_id must be an id"),
    ({"metric": "anls"}, "metric is for custom_vqa"),
])
def test_errors_name_the_file_and_key(tmp_path, change, message):
    hf = hf_dir(tmp_path / "hf", "internvl")
    cfg = {"model": {"family": "internvl", "from_pretrained": hf}, "dataset_path": "x.tsv",
           "evaluation_dataset": "ai2d_test", "evaluation_model": "m", "result_output_path": "out"}
    cfg.update(change)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = write(tmp_path, cfg)
    with pytest.raises(EvalConfigError, match=message) as err:
        load_eval_config(path)
    assert path in str(err.value)


def test_example_configs_parse(tmp_path, monkeypatch):
    """examples/<family>/evaluate_*.json, with their HF dirs made to exist here."""
    monkeypatch.chdir(tmp_path)
    for rel, family in (("internvl2/evaluate_internvl2_8B.json", "internvl"), ("qwen2vl/evaluate_qwen2vl_7b.json", "qwen2_vl"),
                        ("qwen2.5vl/evaluate_qwen2_5_vl_7b.json", "qwen2_5_vl"), ("llava1.5/evaluate_llava1_5.json", "llava")):
        path = os.path.join(REPO, "examples", rel)
        with open(path) as f:
            hf_dir(json.load(f)["tokenizer"]["from_pretrained"])
        assert load_eval_config(path).family == family
        with open(path.replace(".json", ".sh")) as f:
            script = f.read()
        assert "msrun $DISTRIBUTED_ARGS msmm/eval/cli.py" in script and f"examples/{rel}" in script
    args = parse_args(["--mm-model", "x.json", "--load", "mm", "--batch-size", "4"])
    assert (args.mm_model, args.load, args.batch_size) == ("x.json", "mm", 4)
