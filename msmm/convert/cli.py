"""``mm-convert <Converter> <hf_to_mm|mm_to_hf|resplit|merge_lora> --cfg.<key> <value> ...``

Values are Python/JSON literals (``[[6,8,8,6]]``, ``True``, ``8``) or plain strings;
nested keys use dots (``--cfg.parallel_config.tp_size 8``). ``--help`` after a
subcommand lists its keys.
"""
from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from typing import Any, Dict, List, Optional

from .converters import CONVERTERS, HfToMmConfig, MergeLoraConfig, MmToHfConfig, ResplitConfig, converter

COMMANDS = {"hf_to_mm": HfToMmConfig, "mm_to_hf": MmToHfConfig, "resplit": ResplitConfig,
            "merge_lora": MergeLoraConfig}
_DOCS = {  # key -> help text
    "mm_dir": "MM checkpoint directory (written by hf_to_mm, read by mm_to_hf)",
    "save_hf_dir": "directory the HF checkpoint is written to",
    "source_dir": "MM checkpoint to resplit", "target_dir": "where the resplit MM checkpoint is written",
    "hf_config.hf_dir": "HF checkpoint directory (config.json, safetensors, tokenizer files)",
    "hf_config.vision_dir": "LlavaConverter: HF CLIP checkpoint, instead of hf_dir",
    "hf_config.llm_dir": "LlavaConverter: HF Vicuna/Llama checkpoint, instead of hf_dir",
    "hf_config.projector_path": "LlavaConverter: mm_projector.bin or .safetensors, instead of hf_dir",
    "hf_config.image_token_index": "LlavaConverter with pieces: id of <image>",
    "tp_size": "tensor-parallel size",
    "llm_pp_layers": "LLM layers per pipeline stage, one list per virtual chunk, e.g. [[6,8,8,6]]",
    "vit_pp_layers": "ViT layers per pipeline stage, same shape as llm_pp_layers, e.g. [[24,0,0,0]]",
    "make_vocab_size_divisible_by": "pad the vocabulary to a multiple of this times tp_size",
    "max_shard_size": "largest HF safetensors shard, e.g. 5GB",
    "trust_remote_code": "confirm a checkpoint that ships code (auto_map) is trusted; its code is never run",
    "lora_dir": "LoRA adapter in HF PEFT's layout (adapter_config.json, adapter_model.safetensors), "
                "or an msmm-train checkpoint whose iteration directory holds adapter/",
    "overwrite": "replace an existing output: a non-empty save_hf_dir, or a previous mm-convert output in "
                 "mm_dir / target_dir (a directory holding a training checkpoint or other files is never replaced)",
}


class UsageError(ValueError):
    pass


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(args: List[str]) -> Dict[str, Any]:
    """``--cfg.a.b v`` / ``--cfg.a.b=v`` pairs -> nested dict."""
    out: Dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--cfg."):
            raise UsageError(f"unexpected argument {arg!r}: options look like --cfg.<key> <value>")
        if "=" in arg:
            key, text = arg[len("--cfg."):].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise UsageError(f"{arg}: missing value")
            key, text = arg[len("--cfg."):], args[i + 1]
            i += 2
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--cfg.{key}: {part} is not a group")
        node[parts[-1]] = _value(text)
    return out


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def build(cls: type, raw: Dict[str, Any], prefix: str = "") -> Any:
    """The dataclass ``cls`` from nested dict ``raw``; unknown/missing keys and wrong types named."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise UsageError(f"--cfg.{prefix}{key}: unknown key; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        hint = _unwrap(hints[name])
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UsageError(f"--cfg.{prefix}{name}: required")
            continue
        value = raw[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UsageError(f"--cfg.{prefix}{name}: a group; set its keys, e.g. --cfg.{prefix}{name}.<key>")
            value = build(hint, value, f"{prefix}{name}.")
        elif hint is bool and not isinstance(value, bool):
            raise UsageError(f"--cfg.{prefix}{name}: expected True or False, got {value!r}")
        elif hint is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise UsageError(f"--cfg.{prefix}{name}: expected an integer, got {value!r}")
        elif hint is str:
            value = str(value)
        kwargs[name] = value
    return cls(**kwargs)


def usage(converter: Optional[str] = None, command: Optional[str] = None) -> str:
    if command is None:
        lines = ["usage: mm-convert <Converter> <command> --cfg.<key> <value> ...", "", "converters:"]
        lines += [f"  {name:22s} {spec.title} ({spec.name})" for name, spec in CONVERTERS.items()]
        lines += ["", f"commands: {', '.join(COMMANDS)}  (mm-convert <Converter> <command> --help for its keys)"]
        return "\n".join(lines)
    lines = [f"usage: mm-convert {converter or '<Converter>'} {command} --cfg.<key> <value> ...", "", "keys:"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = _unwrap(hints[f.name])
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
                continue
            default = "required" if f.default is dataclasses.MISSING else f"default {f.default!r}"
            doc = _DOCS.get(f"{prefix}{f.name}") or _DOCS.get(f.name, "")
            lines.append(f"  --cfg.{prefix}{f.name:28s} {doc} ({default})")

    walk(COMMANDS[command], "")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = argv.pop(0)
    if name not in CONVERTERS:
        print(f"mm-convert: unknown converter {name!r}; one of {', '.join(CONVERTERS)}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command = argv.pop(0)
    if command not in COMMANDS:
        print(f"mm-convert: unknown command {command!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        print(usage(name, command))
        return 0
    try:
        cfg = build(COMMANDS[command], parse_args(argv))
        out = getattr(converter(name), command)(cfg)
    except UsageError as err:
        print(f"mm-convert {name} {command}: {err}\n\n{usage(name, command)}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"mm-convert {name} {command}: error: {message}", file=sys.stderr)
        return 1
    print(f"mm-convert {name} {command}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
