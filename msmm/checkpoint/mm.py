"""MM checkpoints (what ``msmm-train`` and ``mm-convert`` read and write), split for tensor
and pipeline parallelism, one tensor at a time::

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
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from tqdm import tqdm

from .layout import METADATA, PAYLOAD, RELEASE, TRACKER, read_json, resolve_load_dir, shard_dirs, shard_name
from .parallel import (LLM_LAYER, LLM_POST, LLM_PRE, VIT_LAYER, VIT_POST, VIT_PRE, VOCAB, ParallelConfig,
                       layer_stages, merge, padded_vocab, split, split_heads, split_shape, stage_order, tp_kind)
from .safetensors import Entry, ShardedWriter, Tensor, open_file

HF_CONFIG_DIR = "hf_config"

_MM_KEY = re.compile(r"^model(\d*)\.(.+)$")


@dataclass
class ModelInfo:
    """What conversion needs from config.json (read by the family's ``hf_info`` in ``msmm.registry``)."""

    llm_layers: int
    vit_layers: int
    llm_heads: int
    llm_kv_heads: int
    vit_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    layout: str  # which HF naming the checkpoint uses ("hf" or "remote")


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


_LAYER_SHAPES = (  # MM name suffix of a text decoder layer tensor -> its dims, in config.json terms
    (r"self_attn\.q_proj\.weight", ("q", "hidden")), (r"self_attn\.[kv]_proj\.weight", ("kv", "hidden")),
    (r"self_attn\.(o_proj|wo)\.weight", ("hidden", "q")), (r"self_attn\.wqkv\.weight", ("qkv", "hidden")),
    (r"mlp\.(gate_proj|up_proj|w1|w3)\.weight", ("ffn", "hidden")), (r"mlp\.(down_proj|w2)\.weight", ("hidden", "ffn")),
    (r"(input_layernorm|post_attention_layernorm)\.weight", ("hidden",)),
)


def check_text_shapes(tensors: Mapping[str, Tensor], text: Mapping[str, Any], prefix: str, top: Mapping[str, Any],
                      where: str) -> None:
    """config.json's text decoder numbers (``text``, found under ``prefix``: ``text_config.``,
    ``llm_config.`` or the top level ``top``) against the shapes of the text tensors (MM names):
    the embedding and output head ``[vocab_size, hidden_size]``, the final and layer norms
    ``[hidden_size]``, q/k/v/o (and InternLM2's ``wqkv``) ``num_attention_heads`` /
    ``num_key_value_heads`` times ``head_dim`` (default ``hidden_size / num_attention_heads``),
    the MLP ``intermediate_size``. A key the config leaves out is not checked. Errors name the
    config.json key and the tensor (file and key), before anything is written."""
    def number(key: str, top_level: bool = False) -> Optional[Tuple[int, str]]:
        value, name = text.get(key), prefix + key
        if value is None and top_level:
            value, name = top.get(key), key
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
        return value, name

    hidden, heads, vocab = number("hidden_size"), number("num_attention_heads"), number("vocab_size", True)
    kv, ffn, head_dim = number("num_key_value_heads") or heads, number("intermediate_size"), number("head_dim")
    if head_dim is None and hidden and heads and heads[0] > 0 and hidden[0] % heads[0] == 0:
        head_dim = (hidden[0] // heads[0], f"head_dim ({hidden[1]} / {heads[1]})")
    dims: Dict[str, Optional[Tuple[int, str]]] = {"hidden": hidden, "vocab": vocab, "ffn": ffn}
    if head_dim is not None:
        for what, parts in (("q", [heads]), ("kv", [kv]), ("qkv", [heads, kv, kv])):
            if all(p is not None for p in parts):
                count = sum(p[0] for p in parts)
                names = " + ".join(p[1] for p in parts) if len(parts) == 1 else \
                    f"({parts[0][1]} + 2 * {parts[1][1]})"
                dims[what] = (count * head_dim[0], f"{names} * {head_dim[1]} = {count} * {head_dim[0]}")
    checks = []
    for name, t in tensors.items():
        if LLM_PRE.match(name):  # the embedding first: it shows vocab_size and hidden_size
            checks.append((0, name, ("vocab", "hidden")))
        elif re.search(r"(^|\.)lm_head\.weight$", name):
            checks.append((1, name, ("vocab", "hidden")))
        elif LLM_POST.match(name):
            checks.append((1, name, ("hidden",)))
        else:
            m = LLM_LAYER.match(name)
            for pattern, layer_dims in _LAYER_SHAPES if m else ():
                if re.fullmatch(r"\." + pattern, m.group(3)):
                    checks.append((2 + int(m.group(2)), name, layer_dims))
    for _, name, layer_dims in sorted(checks):
        t = tensors[name]
        if len(t.shape) != len(layer_dims):
            continue
        for axis, (size, what) in enumerate(zip(t.shape, layer_dims)):
            want = dims.get(what)
            if want is not None and want[0] != size:
                file, _, key = t.source.rpartition(":")
                raise ValueError(f"{where}: {want[1]} = {want[0]}, but tensor {key!r} in {file} has shape "
                                 f"{list(t.shape)} (dim {axis} is {size}); config.json and the weights disagree")


def check_divisible(info: ModelInfo, tp: int) -> None:
    """The text decoder's heads divide by ``tp``; the vision encoder's need not (split by
    MindSpeed-MM's unaligned rule, ``parallel.heads_per_rank``), but each rank needs one."""
    for what, heads in (("num_attention_heads", info.llm_heads), ("num_key_value_heads", info.llm_kv_heads)):
        if heads % tp:
            raise ValueError(f"tp_size {tp} does not divide the model's {what} ({heads})")
    if info.vit_heads < tp:
        raise ValueError(f"tp_size {tp} is more than the model's vision num_attention_heads ({info.vit_heads})")


# ---- MM side -------------------------------------------------------------------------------------

def placement(name: str, parallel: ParallelConfig, where: str) -> Tuple[int, int, str]:
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
    final = os.path.join(mm_dir, RELEASE)
    tmp = os.path.join(mm_dir, ".release.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plan: Dict[str, List[Entry]] = {}
    jobs = []
    for name, t in tensors.items():
        chunk, stage, local = placement(name, parallel, t.source)
        kind = tp_kind(name, t.source)
        padded = None
        if kind == VOCAB:
            vocab_size = vocab_size or t.shape[0]
            padded = padded_vocab(t.shape[0], tp, parallel.make_vocab_size_divisible_by)
        heads = split_heads(name, info.vit_heads if info is not None else None)
        key = ("model" if vpp == 1 else f"model{chunk}") + "." + local
        targets = []
        for rank in range(tp):
            path = os.path.join(tmp, shard_name(rank, stage, pp), PAYLOAD)
            plan.setdefault(path, []).append(Entry(key, t.dtype, split_shape(kind, t.shape, tp, name, padded, heads,
                                                                             rank)))
            targets.append((path, key))
        jobs.append((t, kind, padded, heads, targets))
    for rank in range(tp):  # a stage without tensors still gets its (empty) file
        for stage in range(pp):
            plan.setdefault(os.path.join(tmp, shard_name(rank, stage, pp), PAYLOAD), [])
    writer = ShardedWriter(plan, metadata={"format": "msmm"})
    try:
        for t, kind, padded, heads, targets in tqdm(jobs, desc="hf_to_mm", unit="tensor"):
            for (path, key), piece in zip(targets, split(kind, t.load(), tp, padded, heads)):
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
        f.write(RELEASE)
    return final


def read_mm(mm_dir: str) -> Tuple[Dict[str, Tensor], ParallelConfig, dict]:
    """Full MM tensors (global layer indices, TP pieces merged on load), the parallel
    layout found on disk, and the ``mm_convert`` metadata (empty for a trainer checkpoint)."""
    directory = resolve_load_dir(mm_dir)
    shards = shard_dirs(directory)
    tp = max(r for r, _ in shards) + 1
    pp = max(s for _, s in shards) + 1
    meta_file = os.path.join(shards[(0, 0)], METADATA)
    meta = {}
    if os.path.isfile(meta_file):
        stored = read_json(meta_file)
        # how the tensors are split: mm-convert's record, or the trainer's (tensor-parallel runs)
        meta = stored.get("mm_convert") or stored.get("parallel") or {}
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
