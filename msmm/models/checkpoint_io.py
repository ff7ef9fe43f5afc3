"""Load HF safetensors checkpoints (single file or sharded with an index) into msmm models.

Reading is framework-free (numpy); tensors are built with ``torch.tensor`` at the end, so
the same code loads into real torch and into the MindSpore shim. Checkpoint keys reach
our parameter names through a per-family list of regex rules (``KEY_MAPPINGS``), applied
in order with ``re.sub``:

* ``qwen2``, ``llama``: identity (our names are HF's).
* ``qwen2_vl`` (Qwen2-VL and Qwen2.5-VL): identity for the Hub layout (``visual.*``,
  ``model.*``, ``lm_head.*``); ``model.visual.*`` -> ``visual.*`` and
  ``model.language_model.*`` -> ``model.*`` for the layout transformers >= 4.52 uses in memory.
* ``internlm2``: tok_embeddings -> embed_tokens, attention -> self_attn,
  feed_forward -> mlp, attention_norm -> input_layernorm, ffn_norm ->
  post_attention_layernorm, output -> lm_head (wqkv, wo, w1, w2, w3 keep their names).

Keys matching ``IGNORED_KEYS`` (stale rotary buffers) are dropped.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors.numpy import load_file

KEY_MAPPINGS: Dict[str, List[Tuple[str, str]]] = {
    "qwen2": [],
    "llama": [],
    "qwen2_vl": [(r"^model\.visual\.", "visual."), (r"^model\.language_model\.", "model.")],
    "internlm2": [
        (r"^model\.tok_embeddings\.", "model.embed_tokens."),
        (r"\.attention\.", ".self_attn."),
        (r"\.feed_forward\.", ".mlp."),
        (r"\.attention_norm\.", ".input_layernorm."),
        (r"\.ffn_norm\.", ".post_attention_layernorm."),
        (r"^output\.", "lm_head."),
    ],
}
IGNORED_KEYS = re.compile(r"rotary_emb\.inv_freq$")

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def _header(path: str) -> Tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where tensor data starts."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length)), 8 + length


def _read_with_bf16(path: str, header: dict, data_start: int) -> Dict[str, np.ndarray]:
    """numpy has no bfloat16: BF16 tensors are widened to float32 (exact), the rest kept."""
    dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start)
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in dtypes:
            arr = np.array(raw.view(dtypes[info["dtype"]]))
        else:
            raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
        out[key] = arr.reshape(info["shape"])
    return out


def read_safetensors_file(path: str) -> Dict[str, np.ndarray]:
    """All tensors of one .safetensors file as numpy arrays (BF16 widened to float32)."""
    header, data_start = _header(path)
    if any(info["dtype"] == "BF16" for key, info in header.items() if key != "__metadata__"):
        return _read_with_bf16(path, header, data_start)
    return load_file(path)


def checkpoint_files(path: str) -> List[str]:
    """The safetensors files of a checkpoint: a file, or a directory holding either
    ``model.safetensors.index.json`` (sharded) or ``model.safetensors``."""
    if os.path.isfile(path):
        return [path]
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (KeyError, json.JSONDecodeError) as err:
                raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({err})") from err
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
        for file in files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{index} names shard {os.path.basename(file)}, which does not exist")
        return files
    single = os.path.join(path, SINGLE_FILE)
    if os.path.isfile(single):
        return [single]
    raise FileNotFoundError(f"{path}: no {INDEX_FILE} or {SINGLE_FILE}")


def map_key(key: str, rules: Sequence[Tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def read_hf_checkpoint(path: str, family: str) -> Dict[str, Tuple[np.ndarray, str]]:
    """{our parameter name: (array, source file)} for every tensor of the checkpoint."""
    if family not in KEY_MAPPINGS:
        raise ValueError(f"unknown checkpoint family {family!r}; known: {sorted(KEY_MAPPINGS)}")
    rules = KEY_MAPPINGS[family]
    tensors: Dict[str, Tuple[np.ndarray, str]] = {}
    for file in checkpoint_files(path):
        for key, array in read_safetensors_file(file).items():
            if IGNORED_KEYS.search(key):
                continue
            name = map_key(key, rules)
            if name in tensors:
                raise ValueError(f"{file}: key {key!r} maps to {name!r}, already read from {tensors[name][1]}")
            tensors[name] = (array, file)
    return tensors


def load_hf_checkpoint(
    model: torch.nn.Module, path: str, family: str, dtype: Optional[torch.dtype] = None
) -> None:
    """Load an HF safetensors checkpoint into ``model`` (strict: every parameter must be
    found, every tensor used, shapes equal). Names in the model's ``tied_weights``
    ({tied name: source name}) may be absent from the checkpoint."""
    tensors = read_hf_checkpoint(path, family)
    expected: Mapping[str, torch.Tensor] = model.state_dict()
    tied = getattr(model, "tied_weights", {})
    missing = [k for k in expected if k not in tensors and tied.get(k) not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise KeyError(
            f"checkpoint {path} (family {family!r}) does not match the model: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    state = {}
    for name, (array, file) in tensors.items():
        want = tuple(expected[name].shape)
        if tuple(array.shape) != want:
            raise ValueError(f"{file}: {name!r} has shape {tuple(array.shape)}, the model expects {want}")
        state[name] = torch.tensor(array, dtype=dtype or expected[name].dtype)
    model.load_state_dict(state, strict=False)
