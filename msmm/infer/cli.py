"""``msmm-infer inference.json`` and ``msmm-chat inference.json``.

    {
      "model": {"family": "internvl", "from_pretrained": "ckpt/InternVL2-2B",
                "ckpt_path": "save_dir"},           # optional: an MM/trainer checkpoint to load on top
      "tokenizer": {"from_pretrained": "ckpt/InternVL2-2B"},
      "prompts": ["Hello, who are you?"],
      "generation_config": {"max_new_tokens": 64, "do_sample": false, "temperature": 1.0,
                            "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "stop_token_ids": [2]}
    }

``from_pretrained`` is an HF checkpoint directory (what ``mm-convert mm_to_hf`` writes);
``ckpt_path`` an MM checkpoint (``mm-convert hf_to_mm`` or ``msmm-train`` output, any
TP/PP split) whose tensors replace the HF ones. Tokens stream to stdout as they come.
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from typing import Any, Dict, List, Optional

import numpy as np

from .generate import GenerationConfig, generate_stream

FAMILIES = ("internvl", "llava", "qwen2_vl", "qwen2_5_vl")


class InferenceConfigError(ValueError):
    pass


def load_inference_config(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as err:
        raise InferenceConfigError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    for key in ("model", "tokenizer"):
        if not isinstance(cfg.get(key), dict) or "from_pretrained" not in cfg[key]:
            raise InferenceConfigError(f"{path}: {key}.from_pretrained is required")
    family = cfg["model"].get("family")
    if family not in FAMILIES:
        raise InferenceConfigError(f"{path}: model.family must be one of {FAMILIES}, got {family!r}")
    known = {f.name for f in fields(GenerationConfig)}
    for key in cfg.get("generation_config", {}):
        if key not in known:
            raise InferenceConfigError(f"{path}: generation_config.{key}: unknown key; known: {sorted(known)}")
    return cfg


def load_model(model_cfg: Dict[str, Any]):
    family, path = model_cfg["family"], model_cfg["from_pretrained"]
    if family == "internvl":
        from ..models.internvl import load_internvl

        model = load_internvl(path)
    elif family == "llava":
        from ..models.llava import load_llava

        model = load_llava(path)
    else:
        from ..models.checkpoint_io import load_hf_checkpoint
        from ..models.qwen2_vl import Qwen2VL, Qwen2VLConfig

        with open(f"{path}/config.json") as f:
            model = Qwen2VL(Qwen2VLConfig.from_hf(json.load(f)))
        load_hf_checkpoint(model, path, "qwen2_vl")
    if model_cfg.get("ckpt_path"):
        from ..convert.checkpoints import read_mm

        tensors, _, _ = read_mm(model_cfg["ckpt_path"])
        torch = sys.modules[type(model).__module__].torch
        expected = model.state_dict()
        unknown = sorted(set(tensors) - set(expected))
        if unknown:
            raise KeyError(f"{model_cfg['ckpt_path']}: unexpected key {unknown[0]!r} for a {family} model")
        model.load_state_dict({k: torch.tensor(np.asarray(t.load()), dtype=expected[k].dtype)
                               for k, t in tensors.items()}, strict=False)
    return model.eval()


def _stream(model, tokenizer, prompt: str, gen: GenerationConfig) -> str:
    ids = np.array([tokenizer(prompt)["input_ids"]], np.int64)
    out: List[int] = []
    printed = ""
    for token in generate_stream(model, ids, None, gen):
        if int(token[0]) in gen.stop_token_ids:
            break
        out.append(int(token[0]))
        text = tokenizer.decode(out, skip_special_tokens=True)
        sys.stdout.write(text[len(printed):])
        sys.stdout.flush()
        printed = text
    sys.stdout.write("\n")
    return printed


def _setup(path: str):
    from transformers import AutoTokenizer

    cfg = load_inference_config(path)
    tokenizer = AutoTokenizer.from_pretrained(cfg["tokenizer"]["from_pretrained"])
    gen = dict(cfg.get("generation_config", {}))
    if "stop_token_ids" not in gen and tokenizer.eos_token_id is not None:
        gen["stop_token_ids"] = [tokenizer.eos_token_id]
    return cfg, load_model(cfg["model"]), tokenizer, GenerationConfig(**gen)


def infer_main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cfg, model, tokenizer, gen = _setup(argv[0])
    for prompt in cfg.get("prompts", []):
        print(f">>> {prompt}")
        _stream(model, tokenizer, prompt, gen)
    return 0


def chat_main(argv: Optional[List[str]] = None) -> int:
    """Interactive: each line you type is answered, streaming; an empty line or EOF quits."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    _, model, tokenizer, gen = _setup(argv[0])
    while True:
        try:
            line = input("user> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        sys.stdout.write("assistant> ")
        _stream(model, tokenizer, line, gen)
