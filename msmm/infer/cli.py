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

MindSpeed-MM's own inference JSON (``inference_qwen2vl_7b.json``, ``inference_llava.json``...: model
sections, ``tokenizer``, ``prompts`` or ``prompt``, ``image_path``, HF ``generation_config``) is read
too (``msmm/infer/mindspeed_json.py``); its weights come from the sections' ``ckpt_path``, its
``from_pretrained`` or ``msmm-infer JSON --load DIR``. Any other top-level key is an error.

``from_pretrained`` is an HF checkpoint directory (what ``mm-convert mm_to_hf`` writes);
``ckpt_path`` an MM checkpoint (``mm-convert hf_to_mm`` or ``msmm-train`` output, any
TP/PP split) whose tensors replace the HF ones. Tokens stream to stdout as they come.

Without ``data`` a prompt is raw text, tokenised as is. With ``data`` (the ``data.json`` the
model was trained with; InternVL, Qwen2-VL / Qwen2.5-VL or LLaVA) each prompt goes through
that config's chat template and image / video preprocessing, as in training
(``msmm/infer/prompt.py``); paths are relative to the current directory.

The console scripts run the models on MindSpore: they call ``msmm.runtime.start()`` (device,
inline host pipeline, the ``auto_convert`` hook) before ``msmm.models`` is imported, as
``msmm-train`` does. ``infer`` / ``chat`` run with whatever ``msmm.models`` is imported (real
torch unless the hook is installed).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import sys
from dataclasses import fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import runtime
from ..data.templates import add_missing_vision_tokens
from ..registry import FAMILIES as FAMILIES_BY_NAME, get_family, text_section
from .generate import GenerationConfig, generate_stream
from .mindspeed_json import MindSpeedInferenceError, is_mindspeed_inference, load_mindspeed_inference
from .prompt import PreparedPrompt, PromptBuilder, parse_prompt
from .text import IncrementalText

FAMILIES = tuple(FAMILIES_BY_NAME)
TOP_KEYS = ("model", "tokenizer", "data", "system", "prompts", "generation_config")
SECTION_KEYS = {"model": ("family", "from_pretrained", "ckpt_path"), "tokenizer": ("from_pretrained", "trust_remote_code")}


class InferenceConfigError(ValueError):
    pass


def load_inference_config(path: str, require_prompts: bool = False, load: Optional[str] = None) -> Dict[str, Any]:
    """Read and check an inference JSON, msmm's or MindSpeed-MM's (then in msmm's form, with
    ``model.model_config`` built from its sections and ``notes``); every error names the file
    and the key (``require_prompts``: ``prompts`` must be a non-empty list, as ``msmm-infer``
    needs; ``load``: ``msmm-infer --load``, the weights of a MindSpeed-MM JSON)."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise InferenceConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InferenceConfigError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(cfg, dict):
        raise InferenceConfigError(f"{path}: expected a json object, got {type(cfg).__name__}")
    if is_mindspeed_inference(cfg):
        cfg = _from_mindspeed(cfg, path, load)
    else:
        _check_keys(cfg, path)
        if load is not None:
            raise InferenceConfigError(f"--load {load}: for a MindSpeed-MM inference JSON; {path} names its weights "
                                       "in model.from_pretrained / model.ckpt_path")
    for key in ("model", "tokenizer"):
        if not isinstance(cfg.get(key), dict) or not (isinstance(cfg[key].get("from_pretrained"), str)
                                                      or "model_config" in cfg[key]):
            raise InferenceConfigError(f"{path}: {key}.from_pretrained is required (a directory)")
    family = cfg["model"].get("family")
    if family not in FAMILIES:
        raise InferenceConfigError(f"{path}: model.family must be one of {FAMILIES}, got {family!r}")
    prompts = cfg.get("prompts")
    if prompts is None and require_prompts:
        raise InferenceConfigError(f"{path}: prompts: required (a list of prompts to answer)")
    if prompts is not None and not (isinstance(prompts, list) and prompts):
        raise InferenceConfigError(f"{path}: prompts: expected a non-empty list of prompts, got {json.dumps(prompts)[:40]}")
    for i, spec in enumerate(prompts or []):
        try:
            _, images, videos = parse_prompt(spec, f"{path}: prompts[{i}]")
        except ValueError as err:
            raise InferenceConfigError(str(err)) from err
        if (images or videos) and "data" not in cfg:
            raise InferenceConfigError(f"{path}: prompts[{i}] has images or videos: set \"data\" to the training data.json")
    gen = cfg.get("generation_config", {})
    if not isinstance(gen, dict):
        raise InferenceConfigError(f"{path}: generation_config: expected an object, got {type(gen).__name__}")
    known = {f.name for f in fields(GenerationConfig)}
    for key in gen:
        if key not in known:
            raise InferenceConfigError(f"{path}: generation_config.{key}: unknown key; known: {sorted(known)}")
    _check_generation_config(gen, path)
    return cfg


def _check_keys(cfg: Dict[str, Any], path: str) -> None:
    """msmm's inference JSON: every top-level key, and every key of ``model`` / ``tokenizer``, known."""
    def fail(key: str, known) -> None:
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
        raise InferenceConfigError(f"{path}: {key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close
                                                                    else f"; known: {list(known)}"))

    for key in cfg:
        if key not in TOP_KEYS:
            fail(key, TOP_KEYS)
    for section, known in SECTION_KEYS.items():
        for key in cfg[section] if isinstance(cfg.get(section), dict) else ():
            if key not in known:
                fail(f"{section}.{key}", known)


def _from_mindspeed(raw: Dict[str, Any], path: str, load: Optional[str]) -> Dict[str, Any]:
    """A MindSpeed-MM inference JSON in msmm's form; its model sections parsed and checked."""
    from ..models.model_config import ModelConfigError, parse_model_config

    try:
        ms = load_mindspeed_inference(raw, path, load)
        config = parse_model_config(ms.model_json, path)
    except (MindSpeedInferenceError, ModelConfigError) as err:
        raise InferenceConfigError(str(err)) from err
    if ms.weights is None and all(s.ckpt_path is None for s in config.sections.values()):
        raise InferenceConfigError(f"{path}: no weights: give from_pretrained, the sections' ckpt_path or "
                                   "msmm-infer --load DIR (an HF directory or an MM checkpoint)")
    notes = ms.notes + [f"{path}: {p}.pipeline_num_layers: no effect (msmm-infer runs the model on one device)"
                        for p, s in config.sections.items() if s.pipeline_num_layers is not None]
    return {"model": {"family": ms.family, "from_pretrained": ms.weights, "model_config": config, "dtype": ms.dtype},
            "tokenizer": ms.tokenizer, "data": ms.data, "prompts": ms.prompts,
            "generation_config": ms.generation, "context": ms.context, "notes": notes}


def _check_generation_config(gen: Dict[str, Any], path: str) -> None:
    """Types and ranges of ``generation_config``, so no bad value reaches the sampler."""
    def fail(key: str, why: str) -> None:
        raise InferenceConfigError(f"{path}: generation_config.{key}: {why}, got {json.dumps(gen[key])[:40]}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    if "max_new_tokens" in gen and not (is_int(gen["max_new_tokens"]) and gen["max_new_tokens"] >= 1):
        fail("max_new_tokens", "expected an integer >= 1")
    if "do_sample" in gen and not isinstance(gen["do_sample"], bool):
        fail("do_sample", "expected true or false")
    if "temperature" in gen:
        if not (is_number(gen["temperature"]) and gen["temperature"] >= 0):
            fail("temperature", "expected a number >= 0")
        if gen["temperature"] == 0 and gen.get("do_sample"):
            fail("temperature", "must be > 0 with do_sample true (it divides the logits); for greedy decoding set "
                 "do_sample false")
    if "top_k" in gen and not (is_int(gen["top_k"]) and gen["top_k"] >= 0):
        fail("top_k", "expected an integer >= 0 (0: off)")
    if "top_p" in gen and not (is_number(gen["top_p"]) and 0 < gen["top_p"] <= 1):
        fail("top_p", "expected a number in (0, 1] (1: off)")
    if "repetition_penalty" in gen and not (is_number(gen["repetition_penalty"]) and gen["repetition_penalty"] > 0):
        fail("repetition_penalty", "expected a number > 0 (1: off)")
    if "stop_token_ids" in gen and not (isinstance(gen["stop_token_ids"], list)
                                        and all(is_int(t) and t >= 0 for t in gen["stop_token_ids"])):
        fail("stop_token_ids", "expected a list of token ids")
    if "pad_token_id" in gen and not (is_int(gen["pad_token_id"]) and gen["pad_token_id"] >= 0):
        fail("pad_token_id", "expected a token id")
    if gen.get("seed") is not None and not is_int(gen["seed"]):
        fail("seed", "expected an integer or null")


def model_context(model_dir: str) -> Optional[int]:
    """The longest sequence the model takes (``max_position_embeddings`` of its config.json,
    or of its ``text_config`` / ``llm_config``), None if it says nothing."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, text_section(config)[1]):
        if isinstance(section.get("max_position_embeddings"), int):
            return section["max_position_embeddings"]
    return None


def prompt_context(cfg: Dict[str, Any], source: str) -> Tuple[Optional[int], str]:
    """(the longest sequence the model takes, where that is said): a MindSpeed-MM JSON's
    tokenizer.model_max_length / generation_config.max_length, else the checkpoint's config.json."""
    if cfg.get("context") is not None:
        return cfg["context"], f"tokenizer.model_max_length / generation_config.max_length in {source}"
    weights = cfg["model"]["from_pretrained"]
    if weights is None:
        return None, ""
    return model_context(weights), f"max_position_embeddings in {os.path.join(weights, 'config.json')}"


def prepare_prompts(cfg: Dict[str, Any], build: Callable, gen: GenerationConfig, source: str) -> List[PreparedPrompt]:
    """Every prompt of ``cfg`` turned into model inputs before any is answered: an unreadable
    image or video, or a prompt that with ``max_new_tokens`` exceeds the model's context, stops
    here with the prompt's index (and the path)."""
    context = prompt_context(cfg, source)
    prepared = []
    for i, spec in enumerate(cfg["prompts"]):
        where = f"{source}: prompts[{i}]"
        try:
            prompt = build(spec, where)
        except ValueError as err:  # PromptBuilder's errors name the prompt (and path)
            raise InferenceConfigError(str(err)) from None
        check_prompt_length(prompt, gen, *context, where)
        prepared.append(prompt)
    return prepared


def check_prompt_length(prompt: PreparedPrompt, gen: GenerationConfig, context: Optional[int], said: str,
                        where: str) -> None:
    """The prompt and ``max_new_tokens`` fit ``context`` (``said``: where that number is from)."""
    length = prompt.input_ids.shape[1]
    if context is not None and length + gen.max_new_tokens > context:
        raise InferenceConfigError(
            f"{where}: {length} prompt tokens + generation_config.max_new_tokens {gen.max_new_tokens} = "
            f"{length + gen.max_new_tokens} tokens, more than the model's context of {context} ({said}); shorten the "
            "prompt or lower max_new_tokens")


def load_model(model_cfg: Dict[str, Any]):
    """The model of ``model.from_pretrained`` (an HF directory or an MM checkpoint), with the
    MM checkpoint ``model.ckpt_path`` on top if given, in eval mode. ``model.family`` must be
    the checkpoint's (Qwen2-VL and Qwen2.5-VL are one family here)."""
    if "model_config" in model_cfg:
        return _model_from_sections(model_cfg)
    from ..models import from_pretrained, pretrained_family

    path = model_cfg["from_pretrained"]
    found, given = pretrained_family(path), get_family(model_cfg["family"], "model.family")
    if found.data_family != given.data_family:
        raise InferenceConfigError(f"model.family is {model_cfg['family']!r}, but {path} holds a {found.title} "
                                   f"checkpoint ({found.name!r})")
    return from_pretrained(path, ckpt_path=model_cfg.get("ckpt_path")).eval()


def _model_from_sections(model_cfg: Dict[str, Any]):
    """A MindSpeed-MM JSON's model: built from its sections, their ``ckpt_path`` loaded, then
    ``from_pretrained`` / ``--load`` (an HF directory or an MM checkpoint, checked against the
    sections), cast to ``dtype`` on Ascend (CPU computes in fp32), in eval mode."""
    import torch

    from ..checkpoint.layout import is_mm_checkpoint
    from ..checkpoint.train_state import check_load_path
    from ..models import build_model, load_mm_weights, load_pretrained
    from ..models.pretrained import check_checkpoint_config
    from ..models.section_weights import load_section_weights

    config, weights = model_cfg["model_config"], model_cfg["from_pretrained"]
    model = build_model(config)
    for line in load_section_weights(model, config):
        print(f"msmm-infer: {line}", file=sys.stderr)
    if weights is not None and is_mm_checkpoint(weights):
        check_checkpoint_config(config, weights, check_load_path(weights))
        load_mm_weights(model, weights, config.model_id)
    elif weights is not None:
        load_pretrained(model, config, weights)
    dtype = model_cfg.get("dtype", "fp32")
    if dtype != "fp32" and os.environ.get(runtime.DEVICE_ENV, "CPU") != "CPU":
        model.to(torch.bfloat16 if dtype == "bf16" else torch.float16)
    elif dtype != "fp32":
        print(f"msmm-infer: dtype {dtype}: no effect on CPU (no {dtype} compute there; fp32)", file=sys.stderr)
    return model.eval()


def merge_adapter(family: str, hf_dir: str, adapter: str, out: str, trust_remote_code: bool = False) -> None:
    """``out``: the HF checkpoint ``hf_dir`` with the PEFT LoRA adapter ``adapter`` merged in
    (``mm-convert merge_lora``); ``InferenceConfigError`` if the merge fails."""
    from ..convert.cli import main as mm_convert

    argv = [get_family(family).converter, "merge_lora", "--cfg.hf_config.hf_dir", hf_dir, "--cfg.lora_dir", adapter,
            "--cfg.save_hf_dir", out]
    if trust_remote_code:
        argv += ["--cfg.trust_remote_code", "True"]
    if mm_convert(argv) != 0:
        raise InferenceConfigError(f"merging the adapter {adapter} into {hf_dir} failed (above)")


def _stream(model, tokenizer, prompt: PreparedPrompt, gen: GenerationConfig) -> str:
    """Prints the answer as it comes (``IncrementalText``: what is printed is the decoded answer)."""
    text = IncrementalText(tokenizer)
    for token in generate_stream(model, prompt.input_ids, None, gen, **prompt.vision):
        if int(token[0]) in gen.stop_token_ids:
            break
        sys.stdout.write(text.add(int(token[0])))
        sys.stdout.flush()
    sys.stdout.write(text.flush() + "\n")
    return text.text


def _setup_inputs(path: str, require_prompts: bool = False, load: Optional[str] = None):
    """Config, tokenizer and generation config: everything but the model."""
    from transformers import AutoTokenizer

    cfg = load_inference_config(path, require_prompts, load)
    for note in cfg.get("notes", ()):
        print(f"msmm-infer: {note}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(cfg["tokenizer"]["from_pretrained"],
                                              trust_remote_code=bool(cfg["tokenizer"].get("trust_remote_code", False)))
    note = add_missing_vision_tokens(tokenizer, get_family(cfg["model"]["family"]).data_family)
    if note:
        print(f"msmm-infer: {note}", file=sys.stderr)
    gen = dict(cfg.get("generation_config", {}))
    if "stop_token_ids" not in gen and tokenizer.eos_token_id is not None:
        gen["stop_token_ids"] = [tokenizer.eos_token_id]
    return cfg, tokenizer, GenerationConfig(**gen)


def _setup(path: str, load: Optional[str] = None):
    cfg, tokenizer, gen = _setup_inputs(path, load=load)
    return cfg, load_model(cfg["model"]), tokenizer, gen


def _prompt_builder(cfg: Dict[str, Any], tokenizer) -> Callable[..., PreparedPrompt]:
    """The chat template and image preprocessing of ``cfg["data"]``, or raw text without it."""
    if "data" in cfg:
        builder = PromptBuilder(cfg["data"], tokenizer, cfg.get("system"))
        if builder.family != get_family(cfg["model"]["family"]).data_family:
            raise InferenceConfigError(f"{cfg['data']}: a data.json for {builder.family}, "
                                       f"but model.family is {cfg['model']['family']}")
        return builder

    def raw(spec: Any, where: str = "prompts") -> PreparedPrompt:
        return PreparedPrompt(spec, [], np.array([tokenizer(spec)["input_ids"]], np.int64))

    return raw


def infer_main(argv: Optional[List[str]] = None) -> int:
    """``msmm-infer``: ``infer`` on MindSpore."""
    runtime.start()
    return infer(argv)


def chat_main(argv: Optional[List[str]] = None) -> int:
    """``msmm-chat``: ``chat`` on MindSpore."""
    runtime.start()
    return chat(argv)


@contextlib.contextmanager
def _config_notes(prog: str) -> Iterator[None]:
    """The config readers' notes (keys accepted without effect, and why) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    logger, level = logging.getLogger("msmm.config"), logging.getLogger("msmm.config").level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _arguments(argv: List[str]) -> Optional[Tuple[str, Optional[str]]]:
    """(inference JSON, --load DIR or None) of ``JSON [--load DIR]``; None: print the usage."""
    if len(argv) == 1 and not argv[0].startswith("-"):
        return argv[0], None
    if len(argv) == 3 and argv[1] == "--load" and not argv[0].startswith("-"):
        return argv[0], argv[2]
    return None


def _usage(argv: List[str]) -> int:
    print(__doc__)
    return 0 if argv and argv[0] in ("-h", "--help") else 2


def infer(argv: Optional[List[str]] = None) -> int:
    """Answers every prompt of the inference JSON; with stdout redirected, a progress bar
    over the prompts goes to stderr."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = _arguments(argv)
    if parsed is None:
        return _usage(argv)
    from tqdm import tqdm

    try:  # every input checked and prepared before the model is loaded and any prompt answered
        with _config_notes("msmm-infer"):
            cfg, tokenizer, gen = _setup_inputs(parsed[0], require_prompts=True, load=parsed[1])
        prompts = prepare_prompts(cfg, _prompt_builder(cfg, tokenizer), gen, parsed[0])
    except InferenceConfigError as err:
        print(f"msmm-infer: {err}", file=sys.stderr)
        return 2
    model = load_model(cfg["model"])
    for prompt in tqdm(prompts, desc="msmm-infer", unit="prompt", file=sys.stderr, disable=sys.stdout.isatty()):
        print(f">>> {''.join(f'[{p}] ' for p in prompt.images)}{prompt.text}")
        _stream(model, tokenizer, prompt, gen)
    return 0


def chat(argv: Optional[List[str]] = None) -> int:
    """Interactive: each line you type is answered, streaming; an empty line or EOF quits."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = _arguments(argv)
    if parsed is None:
        return _usage(argv)
    with _config_notes("msmm-chat"):
        cfg, model, tokenizer, gen = _setup(*parsed)
    build = _prompt_builder(cfg, tokenizer)
    context = prompt_context(cfg, parsed[0])
    while True:
        try:
            line = input("user> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        try:
            prompt = build(line)
            check_prompt_length(prompt, gen, *context, "your prompt")
        except ValueError as err:
            print(f"msmm-chat: {err}", file=sys.stderr)
            continue
        sys.stdout.write("assistant> ")
        _stream(model, tokenizer, prompt, gen)
