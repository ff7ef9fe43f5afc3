"""``msmm-infer inference.json`` and ``msmm-chat inference.json``.

    {
      "model": {"family": "internvl", "from_pretrained": "ckpt/InternVL2-2B",
                "ckpt_path": "save_dir"},           # optional: an MM/trainer checkpoint to load on top
      "tokenizer": {"from_pretrained": "ckpt/InternVL2-2B"},
      "data": "data.json",                           # optional: the training data.json (InternVL)
      "system": "You are a helpful assistant.",      # optional, with "data": the system turn
      "prompts": ["Hello, who are you?",
                  {"prompt": "What colour is the circle?", "images": ["shapes.png"]},
                  {"prompt": "What happens?", "videos": ["clip.mp4"]}],
      "generation_config": {"max_new_tokens": 64, "do_sample": false, "temperature": 1.0,
                            "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "stop_token_ids": [2]}
    }

``from_pretrained`` is an HF checkpoint directory (what ``mm-convert mm_to_hf`` writes);
``ckpt_path`` an MM checkpoint (``mm-convert hf_to_mm`` or ``msmm-train`` output, any
TP/PP split) whose tensors replace the HF ones. Tokens stream to stdout as they come.

Without ``data`` a prompt is raw text, tokenised as is. With ``data`` (the ``data.json`` the
model was trained with; InternVL, Qwen2-VL / Qwen2.5-VL or LLaVA) each prompt goes through
that config's chat template and image / video preprocessing, as in training
(``msmm/infer/prompt.py``); paths are relative to the current directory.

The console scripts run the models on MindSpore: they install the ``auto_convert`` hook
before ``msmm.models`` is imported, as ``msmm-train`` does. ``infer`` / ``chat`` run with
whatever ``msmm.models`` is imported (real torch unless the hook is installed).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .generate import GenerationConfig, generate_stream
from .prompt import PreparedPrompt, PromptBuilder, parse_prompt

FAMILIES = ("internvl", "llava", "qwen2_vl", "qwen2_5_vl")
DATA_FAMILY = {"internvl": "internvl", "llava": "llava", "qwen2_vl": "qwen2vl", "qwen2_5_vl": "qwen2vl"}


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
    for i, spec in enumerate(cfg.get("prompts", [])):
        try:
            _, images, videos = parse_prompt(spec, f"{path}: prompts[{i}]")
        except ValueError as err:
            raise InferenceConfigError(str(err)) from err
        if (images or videos) and "data" not in cfg:
            raise InferenceConfigError(f"{path}: prompts[{i}] has images or videos: set \"data\" to the training data.json")
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


def _stream(model, tokenizer, prompt: PreparedPrompt, gen: GenerationConfig) -> str:
    """Prints the answer as it comes; text ending in an incomplete UTF-8 sequence waits for
    the next token, so what is printed is the decoded answer."""
    out: List[int] = []
    printed = text = ""
    for token in generate_stream(model, prompt.input_ids, None, gen, **prompt.vision):
        if int(token[0]) in gen.stop_token_ids:
            break
        out.append(int(token[0]))
        text = tokenizer.decode(out, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[len(printed):])
            sys.stdout.flush()
            printed = text
    sys.stdout.write(text[len(printed):] + "\n")
    return text


def _setup(path: str):
    from transformers import AutoTokenizer

    cfg = load_inference_config(path)
    tokenizer = AutoTokenizer.from_pretrained(cfg["tokenizer"]["from_pretrained"])
    gen = dict(cfg.get("generation_config", {}))
    if "stop_token_ids" not in gen and tokenizer.eos_token_id is not None:
        gen["stop_token_ids"] = [tokenizer.eos_token_id]
    return cfg, load_model(cfg["model"]), tokenizer, GenerationConfig(**gen)


def _prompt_builder(cfg: Dict[str, Any], tokenizer) -> Callable[[Any], PreparedPrompt]:
    """The chat template and image preprocessing of ``cfg["data"]``, or raw text without it."""
    if "data" in cfg:
        builder = PromptBuilder(cfg["data"], tokenizer, cfg.get("system"))
        if builder.family != DATA_FAMILY[cfg["model"]["family"]]:
            raise InferenceConfigError(f"{cfg['data']}: a data.json for {builder.family}, "
                                       f"but model.family is {cfg['model']['family']}")
        return builder

    def raw(spec: Any) -> PreparedPrompt:
        return PreparedPrompt(spec, [], np.array([tokenizer(spec)["input_ids"]], np.int64))

    return raw


def use_mindspore() -> None:
    """Bind ``msmm.models`` to ``adapters.torch`` (MindSpore) for the rest of the process."""
    import mindspore

    from auto_convert import hook
    from msmm.train.host_pipeline import configure as configure_host_pipeline

    device = mindspore.get_context("device_target")
    configure_host_pipeline(device)  # before the first MindSpore op: no busy-waiting host queues on CPU
    os.environ.setdefault("MSMM_DEVICE", device)
    hook.install(["msmm.models"])


def infer_main(argv: Optional[List[str]] = None) -> int:
    """``msmm-infer``: ``infer`` on MindSpore."""
    use_mindspore()
    return infer(argv)


def chat_main(argv: Optional[List[str]] = None) -> int:
    """``msmm-chat``: ``chat`` on MindSpore."""
    use_mindspore()
    return chat(argv)


def infer(argv: Optional[List[str]] = None) -> int:
    """Answers every prompt of the inference JSON; with stdout redirected, a progress bar
    over the prompts goes to stderr."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from tqdm import tqdm

    cfg, model, tokenizer, gen = _setup(argv[0])
    build = _prompt_builder(cfg, tokenizer)
    for spec in tqdm(cfg.get("prompts", []), desc="msmm-infer", unit="prompt", file=sys.stderr, disable=sys.stdout.isatty()):
        prompt = build(spec)
        print(f">>> {''.join(f'[{p}] ' for p in prompt.images)}{prompt.text}")
        _stream(model, tokenizer, prompt, gen)
    return 0


def chat(argv: Optional[List[str]] = None) -> int:
    """Interactive: each line you type is answered, streaming; an empty line or EOF quits."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cfg, model, tokenizer, gen = _setup(argv[0])
    build = _prompt_builder(cfg, tokenizer)
    while True:
        try:
            line = input("user> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        sys.stdout.write("assistant> ")
        _stream(model, tokenizer, build(line), gen)
