"""Reading and writing the two checkpoint layouts, one tensor at a time.

HF: ``config.json`` + ``model.safetensors`` or ``model-0000i-of-0000N.safetensors`` with
``model.safetensors.index.json``, plus tokenizer/processor files.

MM (what ``msmm-train`` reads and writes)::

    MM_DIR/
      latest_checkpointed_iteration.txt          "release" (or an iteration number)
      release/                                   (or iter_0000100/)
        mp_rank_{tp:02d}[_{pp:03d}]/             the pp suffix only with pipeline stages
          model_optim_rng.safetensors            "model.<name>" ("model{v}.<name>" per virtual chunk)
          metadata.json                          iteration, and how the checkpoint is split
      hf_config/                                 config.json and tokenizer files of the source

``<name>`` is the msmm parameter name with layer indices local to the stage.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..config.checkpoint_layout import METADATA, PAYLOAD, TRACKER
from .families import (LLM_LAYER, LLM_POST, LLM_PRE, VIT_LAYER, VIT_POST, VIT_PRE, Group, ModelInfo, Unfuse,
                       rename, tp_kind)
from .parallel import VOCAB, ParallelConfig, layer_stages, merge, padded_vocab, split, split_shape, stage_order
from .safetensors_io import Entry, ShardedWriter, Tensor, open_file

INDEX_FILE = "model.safetensors.index.json"
HF_CONFIG_DIR = "hf_config"
IGNORED = re.compile(r"rotary_emb\.inv_freq$")
_WEIGHTS = re.compile(r"(\.(safetensors|bin|pt|pth|ckpt|msgpack|h5)|\.index\.json)$")
_SHARD_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_MM_KEY = re.compile(r"^model(\d*)\.(.+)$")


# ---- HF side -------------------------------------------------------------------------------------

def hf_weight_files(hf_dir: str) -> List[str]:
    index = os.path.join(hf_dir, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            try:
                names = sorted(set(json.load(f)["weight_map"].values()))
            except (KeyError, json.JSONDecodeError) as err:
                raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({err})") from err
        files = [os.path.join(hf_dir, n) for n in names]
        for file in files:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{index} names shard {os.path.basename(file)}, which does not exist")
        return files
    files = sorted(os.path.join(hf_dir, n) for n in os.listdir(hf_dir) if n.endswith(".safetensors"))
    if not files:
        bins = [n for n in os.listdir(hf_dir) if n.endswith(".bin")]
        hint = f" (found {bins[0]}: convert it to safetensors first; pickles are not read)" if bins else ""
        raise FileNotFoundError(f"{hf_dir}: no {INDEX_FILE} and no *.safetensors{hint}")
    return files


def read_hf_tensors(hf_dir: str) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    for file in hf_weight_files(hf_dir):
        for key, tensor in open_file(file).items():
            if key in out:
                raise ValueError(f"{file}: tensor {key!r} also in {out[key].source}")
            out[key] = tensor
    return out


def load_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no config.json")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err


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


# ---- HF names <-> MM names -----------------------------------------------------------------------

def to_mm(tensors: Dict[str, Tensor], groups: Sequence[Group], unfuse: Sequence[Unfuse]) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}

    def add(name: str, t: Tensor, key: str) -> None:
        if name in out:
            raise ValueError(f"{t.source}: {key!r} maps to {name!r}, which {out[name].source} also maps to")
        out[name] = t

    for key, t in tensors.items():
        if IGNORED.search(key):
            continue
        name = rename(key, groups, to_mm=True)
        if name is None:
            raise KeyError(f"{t.source}: unexpected key {key!r} (expected names under "
                           f"{sorted({g[0] for g in groups})})")
        rule = next((u for u in unfuse if u.mm.match(name)), None)
        if rule is None:
            add(name, t, key)
            continue
        stem, param = rule.mm.match(name).groups()
        k = len(rule.parts)
        if t.shape[0] % k:
            raise ValueError(f"{t.source}: fused {key!r} rows {t.shape[0]} do not split into {k} parts")
        rows = t.shape[0] // k
        for i, part in enumerate(rule.parts):
            load = (lambda t=t, i=i: t.load()[i * rows:(i + 1) * rows])
            add(f"{stem}.{part}.{param}", Tensor(t.dtype, (rows,) + t.shape[1:], load, t.source), key)
    return out


def to_hf(tensors: Dict[str, Tensor], groups: Sequence[Group], unfuse: Sequence[Unfuse],
          info: ModelInfo) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    consumed = set()
    for name, t in tensors.items():
        if name in consumed or (info.tie_word_embeddings and re.search(r"(^|\.)lm_head\.weight$", name)):
            continue
        for rule in unfuse:
            fused = _fused_name(name, rule)
            if fused is not None:
                stem, param = fused
                names = [f"{stem}.{p}.{param}" for p in rule.parts]
                missing = [n for n in names if n not in tensors]
                if missing:
                    raise KeyError(f"{t.source}: missing key {missing[0]!r} (fused with {name!r})")
                consumed.update(names)
                parts = [tensors[n] for n in names]
                load = (lambda parts=parts: np.concatenate([p.load() for p in parts], axis=0))
                rows = sum(p.shape[0] for p in parts)
                name, t = f"{stem}.qkv.{param}", Tensor(t.dtype, (rows,) + t.shape[1:], load, t.source)
                break
        key = rename(name, groups, to_mm=False)
        if key is None:
            raise KeyError(f"{t.source}: unexpected key {name!r}")
        out[key] = t
    return out


def _fused_name(name: str, rule: Unfuse) -> Optional[Tuple[str, str]]:
    for part in rule.parts:
        match = re.match(rf"^(.+)\.{re.escape(part)}\.(weight|bias)$", name)
        if match and rule.mm.match(f"{match.group(1)}.qkv.{match.group(2)}"):
            return match.group(1), match.group(2)
    return None


# ---- checks --------------------------------------------------------------------------------------

def check_complete(tensors: Iterable[str], info: ModelInfo, where: str) -> None:
    """Every layer 0..N-1 present with the same parameters, and the embedding, final norm
    and (untied) output head present; errors name the missing key."""
    names = list(tensors)
    for name in names:
        tp_kind(name, where)  # an unknown parameter is an unexpected key
    for pattern, count, what in ((LLM_LAYER, info.llm_layers, "language model"),
                                 (VIT_LAYER, info.vit_layers, "vision encoder")):
        layers: Dict[int, set] = {}
        prefix = None
        for name in names:
            m = pattern.match(name)
            if m:
                prefix = m.group(1)
                layers.setdefault(int(m.group(2)), set()).add(m.group(3))
        extra = sorted(i for i in layers if i >= count)
        if extra:
            raise KeyError(f"{where}: unexpected key {prefix}{extra[0]}.* (config.json says the {what} has {count} layers)")
        every = set().union(*layers.values()) if layers else set()
        for i in range(count):
            missing = sorted(every - layers.get(i, set()))
            if i not in layers:
                raise KeyError(f"{where}: missing key {prefix or ''}{i}.* ({what} layer {i} of {count})")
            if missing:
                raise KeyError(f"{where}: missing key {prefix}{i}{missing[0]}")
    required = [(LLM_PRE, "the token embedding (embed_tokens.weight)"), (re.compile(r"model\.norm\.weight$"),
                "the final norm (model.norm.weight)")]
    if not info.tie_word_embeddings:
        required.append((re.compile(r"(^|\.)lm_head\.weight$"), "the output head (lm_head.weight)"))
    for pattern, what in required:
        if not any(pattern.search(n) for n in names):
            raise KeyError(f"{where}: missing key: {what}")


def check_divisible(info: ModelInfo, tp: int) -> None:
    for what, heads in (("num_attention_heads", info.llm_heads), ("num_key_value_heads", info.llm_kv_heads),
                        ("vision num_attention_heads", info.vit_heads)):
        if heads % tp:
            raise ValueError(f"tp_size {tp} does not divide the model's {what} ({heads})")


# ---- MM side -------------------------------------------------------------------------------------

def shard_name(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    return f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp_size > 1 else "")


def _placement(name: str, parallel: ParallelConfig, where: str) -> Tuple[int, int, str]:
    """(virtual chunk, stage, name with the stage-local layer index) of an MM name."""
    for pattern, pp_layers in ((LLM_LAYER, parallel.llm_pp_layers), (VIT_LAYER, parallel.vit_pp_layers)):
        m = pattern.match(name)
        if m:
            chunk, stage, local = layer_stages(pp_layers)[int(m.group(2))]
            return chunk, stage, f"{m.group(1)}{local}{m.group(3)}"
    vit, llm = stage_order(parallel.vit_pp_layers), stage_order(parallel.llm_pp_layers)
    if VIT_POST.match(name):
        return vit[-1] + (name,)
    if VIT_PRE.match(name):
        return vit[0] + (name,)
    if LLM_PRE.match(name):
        return llm[0] + (name,)
    if LLM_POST.match(name):
        return llm[-1] + (name,)
    raise KeyError(f"{where}: unexpected key {name!r} (neither a vision nor a language-model parameter)")


def write_mm(mm_dir: str, tensors: Dict[str, Tensor], parallel: ParallelConfig, info: Optional[ModelInfo],
             converter: str, vocab_size: Optional[int] = None) -> str:
    """Split ``tensors`` (full MM tensors, global layer indices) into the MM layout under
    ``mm_dir/release`` and point the tracker at it."""
    tp, pp, vpp = parallel.tp_size, parallel.pp_size, parallel.vpp_size
    final = os.path.join(mm_dir, "release")
    tmp = os.path.join(mm_dir, ".release.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plan: Dict[str, List[Entry]] = {}
    jobs = []
    for name, t in tensors.items():
        chunk, stage, local = _placement(name, parallel, t.source)
        kind = tp_kind(name, t.source)
        padded = None
        if kind == VOCAB:
            vocab_size = vocab_size or t.shape[0]
            padded = padded_vocab(t.shape[0], tp, parallel.make_vocab_size_divisible_by)
        shape = split_shape(kind, t.shape, tp, name, padded)
        key = ("model" if vpp == 1 else f"model{chunk}") + "." + local
        targets = []
        for rank in range(tp):
            path = os.path.join(tmp, shard_name(rank, stage, pp), PAYLOAD)
            plan.setdefault(path, []).append(Entry(key, t.dtype, shape))
            targets.append((path, key))
        jobs.append((t, kind, padded, targets))
    for rank in range(tp):  # a stage without tensors still gets its (empty) file
        for stage in range(pp):
            plan.setdefault(os.path.join(tmp, shard_name(rank, stage, pp), PAYLOAD), [])
    writer = ShardedWriter(plan, metadata={"format": "msmm"})
    try:
        for t, kind, padded, targets in tqdm(jobs, desc="hf_to_mm", unit="tensor"):
            for (path, key), piece in zip(targets, split(kind, t.load(), tp, padded)):
                writer.write(path, key, piece)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    layout = {"converter": converter, "tp_size": tp, "llm_pp_layers": parallel.llm_pp_layers,
              "vit_pp_layers": parallel.vit_pp_layers,
              "make_vocab_size_divisible_by": parallel.make_vocab_size_divisible_by, "vocab_size": vocab_size,
              "model": asdict(info) if info is not None else None}
    for path in plan:
        meta = {"iteration": 0, "release": True, "data": None, "python_rng": None, "has_optimizer": False,
                "has_rng": False, "mm_convert": layout}
        with open(os.path.join(os.path.dirname(path), METADATA), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    with open(os.path.join(mm_dir, TRACKER), "w") as f:
        f.write("release")
    return final


def resolve_iteration_dir(mm_dir: str) -> str:
    """The directory holding ``mp_rank_*``: named by the tracker file, or ``mm_dir`` itself."""
    tracker = os.path.join(mm_dir, TRACKER)
    if os.path.isfile(tracker):
        with open(tracker) as f:
            text = f.read().strip()
        if text != "release" and not text.isdigit():
            raise ValueError(f"{tracker}: expected an iteration number or 'release', got {text!r}")
        directory = os.path.join(mm_dir, "release" if text == "release" else f"iter_{int(text):07d}")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{tracker} names {text!r}, but {directory} does not exist")
        return directory
    if os.path.isdir(mm_dir) and any(_SHARD_DIR.match(n) for n in os.listdir(mm_dir)):
        return mm_dir
    raise FileNotFoundError(f"{mm_dir}: no {TRACKER} and no mp_rank_* directories")


def read_mm(mm_dir: str) -> Tuple[Dict[str, Tensor], ParallelConfig, dict]:
    """Full MM tensors (global layer indices, TP pieces merged on load), the parallel
    layout found on disk, and the ``mm_convert`` metadata (empty for a trainer checkpoint)."""
    directory = resolve_iteration_dir(mm_dir)
    shards = {}
    for n in os.listdir(directory):
        m = _SHARD_DIR.match(n)
        if m:
            shards[(int(m.group(1)), int(m.group(2) or 0))] = os.path.join(directory, n)
    tp = max(r for r, _ in shards) + 1
    pp = max(s for _, s in shards) + 1
    for r in range(tp):
        for s in range(pp):
            if (r, s) not in shards:
                raise FileNotFoundError(f"{directory}: missing {shard_name(r, s, pp)} (found tp={tp}, pp={pp})")
    meta_file = os.path.join(shards[(0, 0)], METADATA)
    meta = {}
    if os.path.isfile(meta_file):
        with open(meta_file) as f:
            meta = json.load(f).get("mm_convert") or {}
    # (chunk, stage, tp rank) -> {local name: Tensor}
    local: Dict[Tuple[int, int, int], Dict[str, Tensor]] = {}
    for (rank, stage), path in shards.items():
        payload = os.path.join(path, PAYLOAD)
        if not os.path.isfile(payload):
            raise FileNotFoundError(f"{path}: no {PAYLOAD}")
        for key, t in open_file(payload).items():
            m = _MM_KEY.match(key)
            if m is None:
                continue  # optimizer.* and rng.* of a training checkpoint
            local.setdefault((int(m.group(1) or 0), stage, rank), {})[m.group(2)] = t
    vpp = max((c for c, _, _ in local), default=0) + 1
    counts = {}
    for pattern in (LLM_LAYER, VIT_LAYER):
        counts[pattern] = [[1 + max((int(m.group(2)) for n in local.get((c, s, 0), {})
                                     for m in [pattern.match(n)] if m), default=-1) for s in range(pp)]
                           for c in range(vpp)]
    parallel = ParallelConfig(tp, counts[LLM_LAYER], counts[VIT_LAYER], meta.get("make_vocab_size_divisible_by", 1))
    offsets = {}
    for pattern, pp_layers in counts.items():
        for g, (c, s, i) in enumerate(layer_stages(pp_layers)):
            offsets[(pattern, c, s, i)] = g
    vocab = meta.get("vocab_size")
    out: Dict[str, Tensor] = {}
    for c in range(vpp):
        for s in range(pp):
            names = local.get((c, s, 0), {})
            for r in range(1, tp):
                other = local.get((c, s, r), {})
                if set(other) != set(names):
                    diff = sorted(set(names) ^ set(other))[0]
                    raise KeyError(f"{shards[(r, s)]}: tensor {diff!r} is in one tensor-parallel rank but not the other")
            for name, first in names.items():
                full = name
                for pattern in (LLM_LAYER, VIT_LAYER):
                    m = pattern.match(name)
                    if m:
                        full = f"{m.group(1)}{offsets[(pattern, c, s, int(m.group(2)))]}{m.group(3)}"
                if full in out:
                    raise ValueError(f"{first.source}: {full!r} is stored twice")
                pieces = [local[(c, s, r)][name] for r in range(tp)]
                out[full] = _merged(full, tp_kind(full, first.source), pieces, vocab)
    return out, parallel, meta


def _merged(name: str, kind: str, pieces: List[Tensor], vocab: Optional[int]) -> Tensor:
    shape = list(pieces[0].shape)
    if len(pieces) > 1 and kind != "replicated":
        dim = 1 if kind == "row" and len(shape) > 1 else 0
        if not (kind == "row" and len(shape) == 1):
            shape[dim] = sum(p.shape[dim] for p in pieces)
    if kind == VOCAB and vocab is not None:
        shape[0] = vocab
    load = (lambda: merge(kind, [p.load() for p in pieces], vocab if kind == VOCAB else None))
    return Tensor(pieces[0].dtype, tuple(shape), load, pieces[0].source)
