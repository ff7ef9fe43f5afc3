"""HF checkpoint directories: ``config.json``, ``model.safetensors`` or shards
``model-0000i-of-0000N.safetensors`` with ``model.safetensors.index.json``, and the
tokenizer / processor files beside them. Read lazily, written one tensor at a time."""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, List

import numpy as np
from tqdm import tqdm

from .layout import read_json
from .safetensors import Entry, ShardedWriter, Tensor, open_file
from .torch_pickle import is_torch_zip, read_torch_zip

INDEX_FILE = "model.safetensors.index.json"
_WEIGHTS = re.compile(r"(\.(safetensors|bin|pt|pth|ckpt|msgpack|h5)|\.index\.json)$")


def weight_files(path: str) -> List[str]:
    """The safetensors files of a checkpoint: ``path`` itself if it is a file; in a directory
    the shards ``model.safetensors.index.json`` names, else every ``*.safetensors``."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            try:
                names = sorted(set(json.load(f)["weight_map"].values()))
            except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({err})") from err
        files = [os.path.join(path, n) for n in names]
        for file in files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{index} names shard {os.path.basename(file)}, which does not exist")
        return files
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
    if not files:
        bins = [n for n in os.listdir(path) if n.endswith(".bin")]
        hint = f" (found {bins[0]}: convert it to safetensors first; pickles are not read)" if bins else ""
        raise FileNotFoundError(f"{path}: no {INDEX_FILE} or model.safetensors (no *.safetensors file at all){hint}")
    return files


def read_hf_tensors(path: str) -> Dict[str, Tensor]:
    """{checkpoint key: lazily loaded Tensor} over every weight file of ``path``."""
    out: Dict[str, Tensor] = {}
    for file in weight_files(path):
        for key, tensor in open_file(file).items():
            if key in out:
                raise ValueError(f"{file}: tensor {key!r} also in {out[key].source}")
            out[key] = tensor
    return out


def read_weights_file(path: str) -> Dict[str, Tensor]:
    """One weights file: safetensors, or a torch zip checkpoint (``.bin`` / ``.pt`` / ``.pth``,
    e.g. LLaVA's ``mm_projector.bin`` or OpenAI's CLIP ``.pt``) read by ``read_torch_zip``:
    tensors only, no pickled code runs (as ``torch.load(weights_only=True)``), no torch needed."""
    if path.endswith(".safetensors"):
        return open_file(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    if not is_torch_zip(path):
        raise ValueError(f"{path}: neither safetensors nor a torch zip checkpoint (a pre-1.6 torch.save file is not "
                         "read: re-save it with a current torch, or convert it to .safetensors)")
    return read_torch_zip(path)


def load_config(directory: str) -> Dict[str, Any]:
    """``directory/config.json`` as a dict; errors name the file (and line)."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no config.json")
    return read_json(path)


def copy_side_files(src: str, dst: str, with_code: bool) -> List[str]:
    """Config, tokenizer and processor files (not weights; ``*.py`` only ``with_code``)."""
    os.makedirs(dst, exist_ok=True)
    copied = []
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not os.path.isfile(path) or _WEIGHTS.search(name) or (name.endswith(".py") and not with_code):
            continue
        shutil.copyfile(path, os.path.join(dst, name))
        copied.append(name)
    return copied


def parse_size(size: str) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), re.IGNORECASE)
    if match is None:
        raise ValueError(f"max_shard_size: expected a size like '5GB' or '500MB', got {size!r}")
    unit = (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(float(match.group(1)) * scale)


def write_hf(save_dir: str, tensors: Dict[str, Tensor], max_shard_size: int, desc: str = "mm_to_hf") -> List[str]:
    """HF safetensors: one file, or shards of at most ``max_shard_size`` bytes plus the index."""
    groups: List[List[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        if groups[-1] and size + t.nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += t.nbytes
    n = len(groups)
    files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    plan = {os.path.join(save_dir, f): [Entry(k, tensors[k].dtype, tensors[k].shape) for k in g]
            for f, g in zip(files, groups)}
    writer = ShardedWriter(plan, metadata={"format": "pt"})
    try:
        with tqdm(total=len(tensors), desc=desc, unit="tensor") as bar:
            for path, entries in plan.items():
                for e in entries:
                    writer.write(path, e.name, tensors[e.name].load())
                    bar.update()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if n > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                 "weight_map": {k: f for f, g in zip(files, groups) for k in g}}
        with open(os.path.join(save_dir, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
    return files
