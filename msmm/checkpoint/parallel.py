"""How each tensor is split across tensor-parallel ranks, and which pipeline stage holds it.

Tensor parallelism (Megatron's scheme, on our parameter layout: weights are [out, in]):

* ``COLUMN``: output features (dim 0) split in contiguous chunks: q/k/v, gate/up, fc1,
  their biases; also InternLM2's ``wqkv``, whose rows are grouped per KV group (each
  group: its query heads, then key, then value), so contiguous chunks are whole groups
  as long as the groups divide evenly (checked on the config).
* ``FUSED_QKV``: the Qwen ViT's ``qkv`` [3 * C, ...] = [q; k; v]: each of the three parts
  is split by heads and a rank holds [q_r; k_r; v_r].
* ``ROW``: input features (dim 1) split: o_proj, down_proj, fc2, ...; their biases are
  replicated (added once after the all-reduce).
* ``VOCAB``: the embedding and output head, rows split after padding the vocabulary to a
  multiple of ``tp_size * make_vocab_size_divisible_by`` with zero rows.
* ``REPLICATED``: everything else (norms, position and patch embeddings, layer scales).

The vision encoder's attention (q/k/v and their biases, InternViT's q/k norms, the output
projection's columns) is split by whole heads with MindSpeed-MM's unaligned rule
(``--unaligned-linear``): rank ``r`` of ``tp`` takes ``heads // tp`` heads, one more when
``r < heads % tp`` (InternViT-6B's 25 heads at TP 8: 4, 3, 3, ..., 3). With heads divisible by
``tp`` that is the even split. The callers pass the vision encoder's head count (``heads``).

Pipeline parallelism: ``llm_pp_layers`` / ``vit_pp_layers`` give the layer count per stage,
one inner list per virtual (interleaved) chunk: ``[[6, 8, 8, 6]]`` is 4 stages, no
virtual chunks; ``[[2, 2], [2, 2]]`` is 2 stages with 2 chunks each. Layers are numbered
locally in each stage, as Megatron does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .safetensors import Tensor

REPLICATED, COLUMN, ROW, FUSED_QKV, VOCAB = "replicated", "column", "row", "fused_qkv", "vocab"


def padded_vocab(vocab: int, tp_size: int, multiple: int) -> int:
    step = tp_size * multiple
    return -(-vocab // step) * step


def heads_per_rank(heads: int, tp: int) -> List[int]:
    """MindSpeed-MM's unaligned split of ``heads`` attention heads over ``tp`` ranks: the first
    ``heads % tp`` ranks take one more."""
    return [heads // tp + (1 if r < heads % tp else 0) for r in range(tp)]


VISION_ATTENTION = re.compile(r"(^|\.)vision_tower\.encoder\.layers?\.\d+\.(self_attn|attention)\."
                              r"(q_proj|k_proj|v_proj|q_norm|k_norm|out_proj|projection_layer)\.(weight|bias)$")


def split_heads(name: str, heads: Optional[int]) -> Optional[int]:
    """``heads`` when ``name`` is split by whole heads (the vision encoder's attention), else None."""
    return heads if heads is not None and VISION_ATTENTION.search(name) else None


def _head_sizes(length: int, tp: int, heads: int, name: str) -> List[int]:
    if length % heads:
        raise ValueError(f"{name}: dim {length} is not a whole number of {heads} heads")
    return [n * (length // heads) for n in heads_per_rank(heads, tp)]


def split_shape(kind: str, shape: Tuple[int, ...], tp: int, name: str, padded: Optional[int] = None,
                heads: Optional[int] = None, rank: int = 0) -> Tuple[int, ...]:
    """Shape of rank ``rank``'s piece (``heads``: split by heads, see the module doc); errors name
    the tensor when it does not divide."""
    if kind == REPLICATED or tp == 1 and kind != VOCAB:
        return shape
    if kind == VOCAB:
        rows = padded if padded is not None else shape[0]
        return (rows // tp,) + shape[1:]
    dim = 1 if kind == ROW else 0
    parts = 3 if kind == FUSED_QKV else 1
    if heads is not None and kind in (COLUMN, ROW) and len(shape) > dim:
        out = list(shape)
        out[dim] = _head_sizes(shape[dim], tp, heads, name)[rank]
        return tuple(out)
    if len(shape) <= dim or shape[dim] % (tp * parts):
        raise ValueError(f"{name}: {kind}-parallel dim {dim} of shape {shape} does not divide by tp_size {tp}"
                         + (" into q/k/v parts" if parts == 3 else ""))
    out = list(shape)
    out[dim] //= tp
    return tuple(out)


def split(kind: str, array: np.ndarray, tp: int, padded: Optional[int] = None,
          heads: Optional[int] = None) -> List[np.ndarray]:
    """The ``tp`` pieces of ``array`` (views where possible); ``heads``: split by heads."""
    if kind == REPLICATED:
        return [array] * tp
    if heads is not None and kind in (COLUMN, ROW) and array.ndim > (kind == ROW):
        axis = 1 if kind == ROW else 0
        return np.split(array, np.cumsum(_head_sizes(array.shape[axis], tp, heads, "tensor"))[:-1], axis=axis)
    if kind == VOCAB:
        if padded is not None and padded != array.shape[0]:
            pad = np.zeros((padded - array.shape[0],) + array.shape[1:], array.dtype)
            array = np.concatenate([array, pad], axis=0)
        return np.split(array, tp, axis=0)
    if kind == ROW:
        return np.split(array, tp, axis=1) if array.ndim > 1 else [array] * tp
    if kind == FUSED_QKV:
        q, k, v = (np.split(part, tp, axis=0) for part in np.split(array, 3, axis=0))
        return [np.concatenate([q[r], k[r], v[r]], axis=0) for r in range(tp)]
    return np.split(array, tp, axis=0)


def merge(kind: str, pieces: Sequence[np.ndarray], vocab: Optional[int] = None) -> np.ndarray:
    """Inverse of ``split``; ``vocab`` drops the padding rows of a VOCAB tensor."""
    if kind == REPLICATED or len(pieces) == 1 and kind != VOCAB:
        return pieces[0]
    if kind == VOCAB:
        full = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
        return full[:vocab] if vocab is not None else full
    if kind == ROW:
        return np.concatenate(pieces, axis=1) if pieces[0].ndim > 1 else pieces[0]
    if kind == FUSED_QKV:
        thirds = [np.split(p, 3, axis=0) for p in pieces]
        return np.concatenate([t[i] for i in range(3) for t in thirds], axis=0)
    return np.concatenate(pieces, axis=0)


@dataclass
class ParallelConfig:
    """Tensor- and pipeline-parallel layout of an MM checkpoint."""

    tp_size: int = 1
    llm_pp_layers: Optional[List[List[int]]] = None  # per virtual chunk, per stage; default all on one stage
    vit_pp_layers: Optional[List[List[int]]] = None
    make_vocab_size_divisible_by: int = 1

    def resolved(self, llm_layers: int, vit_layers: int) -> "ParallelConfig":
        """A copy with the defaults filled in and everything checked against the model."""
        if not isinstance(self.tp_size, int) or self.tp_size < 1:
            raise ValueError(f"parallel_config.tp_size must be a positive integer, got {self.tp_size!r}")
        if not isinstance(self.make_vocab_size_divisible_by, int) or self.make_vocab_size_divisible_by < 1:
            raise ValueError("parallel_config.make_vocab_size_divisible_by must be a positive integer")
        llm = self.llm_pp_layers or [[llm_layers]]
        vit = self.vit_pp_layers or [[vit_layers] + [0] * (len(llm[0]) - 1)]
        for key, value, total in (("llm_pp_layers", llm, llm_layers), ("vit_pp_layers", vit, vit_layers)):
            if not (isinstance(value, list) and value and all(isinstance(c, list) and c for c in value)
                    and all(isinstance(n, int) and n >= 0 for c in value for n in c)):
                raise ValueError(f"parallel_config.{key} must be a list of lists of layer counts, e.g. [[6,8,8,6]], "
                                 f"got {value!r}")
            if len({len(c) for c in value}) != 1:
                raise ValueError(f"parallel_config.{key}={value}: every virtual chunk needs the same number of stages")
            if sum(map(sum, value)) != total:
                raise ValueError(f"parallel_config.{key}={value} adds up to {sum(map(sum, value))} layers, "
                                 f"the model has {total}")
        if (len(llm), len(llm[0])) != (len(vit), len(vit[0])):
            raise ValueError(f"parallel_config: llm_pp_layers {llm} and vit_pp_layers {vit} need the same shape "
                             "(virtual chunks x pipeline stages)")
        return ParallelConfig(self.tp_size, llm, vit, self.make_vocab_size_divisible_by)

    @property
    def pp_size(self) -> int:
        return len(self.llm_pp_layers[0])

    @property
    def vpp_size(self) -> int:
        return len(self.llm_pp_layers)


def layer_stages(pp_layers: List[List[int]]) -> List[Tuple[int, int, int]]:
    """(virtual chunk, stage, local index) of every global layer, in model order: chunk 0
    over all stages, then chunk 1, ..."""
    out = []
    for chunk, counts in enumerate(pp_layers):
        for stage, count in enumerate(counts):
            out.extend((chunk, stage, i) for i in range(count))
    return out


def stage_order(pp_layers: List[List[int]]) -> List[Tuple[int, int]]:
    """(chunk, stage) slots holding at least one layer, in model order."""
    return [(c, s) for c, counts in enumerate(pp_layers) for s, n in enumerate(counts) if n]


# ---- what every MM name is: pipeline placement and tensor-parallel split ---------------------

LLM_LAYER = re.compile(r"^((?:language_model\.)?model\.layers\.)(\d+)(\..+)$")
VIT_LAYER = re.compile(r"^((?:vision_tower\.encoder\.layers?|visual\.blocks)\.)(\d+)(\..+)$")
VIT_POST = re.compile(r"^(multi_modal_projector\.|visual\.merger\.|vision_tower\.(post_layernorm|layernorm)\.)")
VIT_PRE = re.compile(r"^(vision_tower|visual)\.")
LLM_PRE = re.compile(r"^(language_model\.)?model\.embed_tokens\.weight$")
LLM_POST = re.compile(r"^(language_model\.)?(model\.norm\.weight|lm_head\.weight)$")

_NORMS = (r"input_layernorm|post_attention_layernorm|norm|norm1|norm2|layer_norm1|layer_norm2|layernorm_before|"
          r"layernorm_after|layer_norm|ln_q|pre_layrnorm|post_layernorm|layernorm")
_ROW = r"o_proj|down_proj|wo|w2|out_proj|projection_layer|fc2|attn\.proj|linear_2|mlp\.2"
_COLUMN = r"q_proj|k_proj|v_proj|q_norm|k_norm|gate_proj|up_proj|w1|w3|wqkv|fc1|linear_1|mlp\.0"
TP_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"(^|\.)(embed_tokens|lm_head)\.weight$"), VOCAB),
    (re.compile(r"\.attn\.qkv\.(weight|bias)$"), FUSED_QKV),
    (re.compile(rf"\.({_ROW})\.weight$"), ROW),
    (re.compile(rf"\.({_ROW})\.bias$"), REPLICATED),
    (re.compile(rf"\.({_COLUMN})\.(weight|bias)$"), COLUMN),
    (re.compile(rf"\.({_NORMS})\.(weight|bias)$"), REPLICATED),
    (re.compile(r"\.embeddings\.(cls_token|class_embedding|position_embeddings|position_embedding\.weight|"
                r"patch_embedding\.(weight|bias)|patch_embeddings\.projection\.(weight|bias))$"), REPLICATED),
    (re.compile(r"\.patch_embed\.proj\.(weight|bias)$"), REPLICATED),
    (re.compile(r"\.lambda_[12]$"), REPLICATED),
]


def tp_kind(name: str, where: str) -> str:
    for pattern, kind in TP_RULES:
        if pattern.search(name):
            return kind
    raise KeyError(f"{where}: unexpected key {name!r} (no tensor-parallel rule knows it)")


def shard_tensors(tensors: Mapping[str, Tensor], tp: int, rank: int, make_vocab_size_divisible_by: int = 1,
                  vision_heads: Optional[int] = None) -> Dict[str, Tensor]:
    """Tensor-parallel rank ``rank``'s piece of each full MM tensor, loaded lazily: the
    pieces ``write_mm`` writes to ``mp_rank_{rank:02d}`` (a model built at that rank takes them)."""
    out: Dict[str, Tensor] = {}
    for name, t in tensors.items():
        kind = tp_kind(name, t.source)
        padded = padded_vocab(t.shape[0], tp, make_vocab_size_divisible_by) if kind == VOCAB else None
        heads = split_heads(name, vision_heads)
        load = (lambda t=t, kind=kind, padded=padded, heads=heads: split(kind, t.load(), tp, padded, heads)[rank])
        out[name] = Tensor(t.dtype, split_shape(kind, t.shape, tp, name, padded, heads, rank), load, t.source)
    return out
