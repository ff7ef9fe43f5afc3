"""``msmm-infer`` on MindSpeed-MM's own inference JSON, written here from the facts of upstream's
``inference_qwen2vl_7b.json`` (model sections in its spelling, ``pipeline_class``, ``prompts`` as a
string, ``image_path``, ``min_pixels`` / ``max_pixels``, HF's full ``generation_config``; weights
from ``--load``) and the LLaVA guide's ``inference_llava.json`` (sections with ``ckpt_path``: a CLIP
checkpoint, Vicuna, MindSpeed-MM's converted ``mlp.pt``; ``prompt``): the streamed answer equals HF
``generate`` on the same inputs. Keys msmm cannot honour are errors naming the file and key."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "convert"))
import tiny_hf  # noqa: E402
from test_infer_media import word_tokenizer  # noqa: E402

from msmm.infer.cli import InferenceConfigError, infer, load_inference_config  # noqa: E402
from msmm.infer.prompt import PromptBuilder  # noqa: E402

NEW = 5
PROMPT = "What is in the image ?"
# HF GenerationConfig keys upstream's files list at their defaults (accepted, nothing to do)
HF_DEFAULTS = {"num_beams": 1, "output_attentions": False, "min_length": 0, "typical_p": 1.0, "constraints": None,
               "use_cache": True, "bos_token_id": 1}
LM = {"normalization": "RMSNorm", "activation_func": "silu", "gated_linear_unit": True, "add_bias_linear": False,
      "hidden_dropout": 0.0, "attention_dropout": 0.0, "bf16": True, "params_dtype": "bf16",
      "attention_softmax_in_fp32": True, "num_layers": tiny_hf.LLM_LAYERS, "hidden_size": 32, "ffn_hidden_size": 64,
      "num_attention_heads": 4, "num_query_groups": 2, "max_position_embeddings": 256, "layernorm_epsilon": 1e-6}


def qwen2vl_inference_json(tokenizer_dir: str, image: str) -> dict:
    return {
        "pipeline_class": "Qwen2VlPipeline", "img_context_token_id": tiny_hf.IMAGE,
        "video_token_id": tiny_hf.VIDEO, "vision_start_token_id": tiny_hf.VISION_START,
        "image_encoder": {
            "vision_encoder": {"model_id": "qwen2vit", "num_layers": tiny_hf.VIT_LAYERS, "hidden_size": 32,
                               "ffn_hidden_size": 64, "num_attention_heads": 4, "llm_hidden_size": 32, "in_channels": 3,
                               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                               "layernorm_epsilon": 1e-6, "normalization": "LayerNorm", "activation_func": "quick_gelu",
                               "post_layer_norm": False, "use_fused_rotary_pos_emb": True, "freeze": True,
                               "pipeline_num_layers": [tiny_hf.VIT_LAYERS], "bf16": True},
            "vision_projector": {"model_id": "lnmlp", "num_layers": 1, "gated_linear_unit": False,
                                 "add_bias_linear": True, "input_size": 32, "hidden_size": 32, "ffn_hidden_size": 128,
                                 "activation_func": "gelu", "normalization": "LayerNorm", "layernorm_epsilon": 1e-6}},
        "text_decoder": {**LM, "model_id": "qwen2lm", "vocab_size": tiny_hf.VOCAB, "rope_theta": 10000.0,
                         "untie_embeddings_and_output_weights": True, "disable_bias_linear": True,
                         "add_qkv_bias": True, "position_embedding_type": "mrope", "mrope_section": [2, 1, 1],
                         "rope_scaling": None, "group_query_attention": True, "use_infer_fa": True},
        "text_encoder": None, "video_encoder": None, "dtype": "bf16", "device": "npu",
        "tokenizer": {"hub_backend": "hf", "autotokenizer_name": "AutoTokenizer", "from_pretrained": tokenizer_dir},
        "generation_config": {**HF_DEFAULTS, "max_new_tokens": NEW, "do_sample": False, "eos_token_id": [],
                              "image_token_id": tiny_hf.IMAGE},
        "patch": {"infer_fa": True}, "min_pixels": 3136, "max_pixels": 3136,
        "image_path": image, "prompts": PROMPT,
    }


def write(path, data: dict) -> str:
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def hf_answer(ref, cfg: dict, tokenizer, image: str) -> str:
    """HF generate on the prompt msmm's pipeline prepares for the JSON."""
    prompt = PromptBuilder(cfg["data"], tokenizer)({"prompt": PROMPT, "images": [image]})
    ids = torch.tensor(prompt.input_ids)
    assert (prompt.input_ids == tiny_hf.IMAGE).sum() > 0
    vision = {k: torch.tensor(v) for k, v in prompt.vision.items() if k != "image_flags"}
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **vision, max_new_tokens=NEW,
                           do_sample=False, eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:]
    return tokenizer.decode(out.tolist(), skip_special_tokens=True)


@pytest.fixture
def image(tmp_path) -> str:
    path = str(tmp_path / "demo.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 70, 3), np.uint8)).save(path)
    return path


def test_qwen2vl_inference_json_with_load_matches_hf(tmp_path, image, capsys):
    ref = tiny_hf.qwen2_vl("qwen2_vl", patch_size=14)
    hf_dir = tiny_hf.save(ref, str(tmp_path / "hf"))
    tokenizer = word_tokenizer("qwen2vl", hf_dir)
    path = write(tmp_path / "inference_qwen2vl.json", qwen2vl_inference_json(hf_dir, image))
    capsys.readouterr()
    assert infer([path, "--load", hf_dir]) == 0
    captured = capsys.readouterr()
    cfg = load_inference_config(path, load=hf_dir)
    assert captured.out == f">>> [{image}] {PROMPT}\n{hf_answer(ref, cfg, tokenizer, image)}\n"
    assert "text_decoder.use_infer_fa: no effect (a kernel choice" in captured.err
    assert "generation_config.use_cache: no effect" in captured.err
    assert "dtype bf16: no effect on CPU" in captured.err


def test_llava_guide_inference_json_from_pieces_matches_hf(tmp_path, image, capsys):
    """The guide's inference_llava.json: CLIP, Vicuna and MindSpeed-MM's converted mlp.pt named by
    the sections' ckpt_path, the question in ``prompt``."""
    ref = tiny_hf.llava()
    state = {k: v.detach().contiguous() for k, v in ref.state_dict().items()}
    clip = {k[len("model.vision_tower."):]: v for k, v in state.items() if k.startswith("model.vision_tower.")}
    save_file(clip, str(tmp_path / "clip.safetensors"))
    from transformers import LlamaConfig, LlamaForCausalLM

    vicuna = LlamaForCausalLM(LlamaConfig(**ref.config.text_config.to_dict()))
    vicuna.model.load_state_dict({k[len("model.language_model."):]: v for k, v in state.items()
                                  if k.startswith("model.language_model.")})
    vicuna.lm_head.weight.data.copy_(state["lm_head.weight"])
    vicuna_dir = str(tmp_path / "vicuna")
    vicuna.save_pretrained(vicuna_dir)
    tokenizer = word_tokenizer("llava", vicuna_dir)
    projector = {f"encoder.linear_fc{i}.{p}": state[f"model.multi_modal_projector.linear_{i}.{p}"]
                 for i in (1, 2) for p in ("weight", "bias")}
    torch.save(projector, tmp_path / "mlp.pt")
    config = {
        "model_id": "llava", "pipeline_class": "LlavaPipeline", "image_token_id": tiny_hf.IMAGE,
        "text_decoder": {**LM, "language_vocab_size": tiny_hf.VOCAB, "lm_position_embedding_type": "rope",
                         "freeze": True, "ckpt_path": vicuna_dir, "fp16": True},
        "image_encoder": {
            "vision_encoder": {"model_id": "clip", "num_layers": tiny_hf.VIT_LAYERS, "hidden_size": 32,
                               "num_attention_heads": 4, "num_query_groups": 4, "ffn_hidden_size": 64, "kv_channels": 8,
                               "add_class_token": True, "class_token_len": 1, "patch_size": 7, "image_size": 28,
                               "activation_func": "quick_gelu", "normalization": "LayerNorm", "freeze": True,
                               "ckpt_path": str(tmp_path / "clip.safetensors")},
            "vision_projector": {"model_id": "mlp", "num_layers": 2, "input_size": 32, "hidden_size": 32,
                                 "ffn_hidden_size": 32, "activation_func": "gelu", "add_bias_linear": True,
                                 "freeze": True, "ckpt_path": str(tmp_path / "mlp.pt")}},
        "text_encoder": None, "video_encoder": None, "dtype": "fp16", "device": "npu",
        "tokenizer": {"hub_backend": "hf", "autotokenizer_name": "AutoTokenizer", "from_pretrained": vicuna_dir},
        "generation_config": {**HF_DEFAULTS, "max_new_tokens": NEW, "do_sample": False, "eos_token_id": [],
                              "max_length": 256},
        "image_processer_path": "clip-vit-large-patch14-336", "image_path": image, "prompt": PROMPT,
    }
    path = write(tmp_path / "inference_llava.json", config)
    capsys.readouterr()
    assert infer([path]) == 0
    captured = capsys.readouterr()
    assert captured.out == f">>> [{image}] {PROMPT}\n{hf_answer(ref, load_inference_config(path), tokenizer, image)}\n"
    assert "image_processer_path: no effect" in captured.err


@pytest.mark.parametrize("change, message", [
    ({"promtps": "hi"}, "promtps: unknown key (did you mean 'prompts'?)"),
    ({"prompt": "hi"}, "prompt: give prompt or prompts, not both"),
    ({"generation_config": {"num_beams": 4}}, "generation_config.num_beams: 4: not implemented in msmm-infer"),
    ({"generation_config": {"image_token_id": 5}}, "generation_config.image_token_id: 5 differs from the model's "
                                                   "image_token_id 97"),
    ({"generation_config": {"max_new_token": 3}}, "generation_config.max_new_token: unknown key (did you mean "
                                                  "'max_new_tokens'?)"),
    ({"tokenizer": {"from_pretrained": "hf", "add_eos_token": True}}, "tokenizer.add_eos_token: true would end"),
    ({"num_segments": 8}, "num_segments: only InternVL samples"),
    ({"template": "chatml"}, "template: 'chatml': expected one of ('qwen2vl',)"),
    ({"pipeline_class": "SoraPipeline"}, "pipeline_class: 'SoraPipeline': expected one of"),
])
def test_mindspeed_inference_json_errors_name_the_key(tmp_path, change, message):
    raw = {**qwen2vl_inference_json("hf", "demo.png"), **change}
    path = write(tmp_path / "inference.json", raw)
    with pytest.raises(InferenceConfigError) as info:
        load_inference_config(path, load="hf")
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), str(info.value)


def test_mindspeed_inference_json_needs_weights(tmp_path):
    path = write(tmp_path / "inference.json", qwen2vl_inference_json("hf", "demo.png"))
    with pytest.raises(InferenceConfigError, match="no weights: give from_pretrained, the sections' ckpt_path or "
                                                   "msmm-infer --load DIR"):
        load_inference_config(path)


def test_msmm_inference_json_unknown_top_level_key(tmp_path):
    """Today's bug: msmm's own JSON with ``prompt`` (not ``prompts``) ran zero prompts and exited 0."""
    raw = {"model": {"family": "qwen2_vl", "from_pretrained": "hf"}, "tokenizer": {"from_pretrained": "hf"},
           "prompt": "hi"}
    path = write(tmp_path / "inference.json", raw)
    with pytest.raises(InferenceConfigError, match=r"inference.json: prompt: unknown key \(did you mean 'prompts'\?\)"):
        load_inference_config(path)
    assert infer([path]) == 2
    raw = {"model": {"family": "qwen2_vl", "from_pretrained": "hf", "ckpt_pth": "save"},
           "tokenizer": {"from_pretrained": "hf"}, "prompts": ["hi"]}
    with pytest.raises(InferenceConfigError, match=r"model.ckpt_pth: unknown key \(did you mean 'ckpt_path'\?\)"):
        load_inference_config(write(tmp_path / "typo.json", raw))


ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPTS = ["qwen2vl/inference_qwen2vl_7b.sh", "qwen2.5vl/inference_qwen2_5_vl_7b.sh", "internvl2/inference_internvl.sh",
           "internvl3/inference_internvl.sh", "llava1.5/inference_llava1_5.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_inference_scripts_and_json_validate(script, tmp_path):
    """Each family's inference_*.sh runs msmm-infer on its JSON, which parses (model sections
    built abstractly, every key honoured or noted)."""
    import shlex
    import subprocess

    record = tmp_path / "argv"
    shell = f'msmm-infer() {{ printf "%s\\n" "$@" > {shlex.quote(str(record))}; }}; export -f msmm-infer; ' \
            f'bash {shlex.quote(os.path.join(ROOT, "examples", script))}'
    subprocess.run(["bash", "-c", shell], cwd=ROOT, check=True, capture_output=True, timeout=60)
    argv = record.read_text().splitlines()
    cfg = load_inference_config(os.path.join(ROOT, argv[0]), require_prompts=True,
                                load=argv[2] if len(argv) == 3 else None)
    assert cfg["prompts"] and cfg["model"]["model_config"].model_id == cfg["model"]["family"]
