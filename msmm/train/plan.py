"""``msmm-train --dry-run``: the layout and per-device memory of a run, without weights or data.

    msmm-train --mm-model model.json --mm-data data.json ... --tensor-model-parallel-size 8 \\
        --pipeline-model-parallel-size 2 --dry-run --world-size 16 [--device-memory-gb 64]

Every argument, ``model.json`` and ``data.json`` are parsed and validated as a real run does
(missing data, tokenizer or checkpoint paths are warnings here), the layout is checked
(``msmm.train.parallel.validate``), the model is built from its one definition in
``msmm/models`` on the shape-only torch (``adapters.meta_torch``: shapes, no weights, no
MindSpore), and the plan printed: which layers sit on which pipeline stage (and virtual
chunk), how tensor parallelism splits them, and per device the weights, gradients, optimizer
state and activations against ``--device-memory-gb``. Exit 0: valid and fits; 2: invalid
(the message names the flag or key); 3: valid but some stage does not fit.

**Per-rank parameters** are what ``mm-convert hf_to_mm`` puts in that rank's ``mp_rank_*``
directory: each tensor of the built model is placed on its stage and split for tensor
parallelism by the same functions (``msmm.checkpoint.mm.placement``,
``msmm.checkpoint.parallel.tp_kind`` / ``split_shape``, vocabulary padded to a multiple of TP).

**Memory per device** (bytes; GB here means GiB, 2^30, as ``npu-smi`` reports 64 GB devices):

* weights: every parameter and buffer of the rank in the run's dtype (``--bf16`` / ``--fp16``:
  2 bytes for floating tensors; quantized LoRA bases keep their int8/uint8 codes and fp32 scales);
* gradients: 4 bytes per trainable parameter (msmm-train accumulates each gradient in an fp32
  buffer, ``step.TrainStep``);
* optimizer: AdamW's two fp32 moments (8 bytes) plus an fp32 master copy (4 bytes) for 16-bit
  parameters, per trainable parameter (``optimizer.AdamW``); with ``--use-distributed-optimizer``
  master and moments of every trainable parameter (12 bytes) divided by the data-parallel size
  (x context-parallel size, Megatron's group for it) (``distributed_optimizer.DistributedAdamW``,
  ZeRO-1: the fp32 gradient buffers stay whole);
* activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models" (arXiv:2205.05198), per layer, generalised from its GPT layer
  (``sbh(34 + 5as/h)``) to the layer at hand and counted in the activation dtype (2 bytes with
  --bf16/--fp16, else 4), for ``n`` tokens of a micro-batch (``b`` x ``--seq-length`` / CP for
  text; for vision the patches of one image at the largest size ``data.json`` allows, capped by
  what fits in ``--seq-length``), hidden ``h``, ``a`` heads of dim ``d``, ``g`` KV groups, FFN ``f``,
  TP ``t`` (``r = 1/t`` with --sequence-parallel in the text decoder, else 1):

      stored  = n e [2 h r + L 2 h r + (2 a d + 2 g d) / t + c_mlp f / t] + n (a / t) A
      2 h r   the inputs of the two norms
      L 2 h r the inputs of the QKV projection and the MLP (L = 1 when the layer's weights train,
              LoRA included; 0 for a frozen layer the gradient only passes through: a frozen
              linear layer's backward needs its weight, not its input)
      2ad+2gd Q, K, V and the attention output (flash attention's backward needs all four)
      c_mlp   4 (SwiGLU: gate, up, act, product) or 2 (GELU MLP: fc1 out, act out) when trained;
              3 or 1 when frozen (the product / act output only feed a frozen linear)
      A       64 bytes with flash attention (Ascend's FlashAttentionScore keeps 8 fp32 softmax
              max and sum per head and token; used for 16-bit inputs), else e x S (the softmax
              output over the attention span S: the sequence, a tile or the micro-batch's patches)

  (With ``f = 4h``, ``a d = g d = h``, a GELU MLP and no flash this is Korthikanti's
  ``sbh (34 + 5 as / h)`` without the dropout terms, ``2 sbh + 3 as^2 b`` (two 1-byte masks of
  the layer outputs, the attention-probability mask and dropout output): every model here trains
  without dropout. Per TP rank the norm and linear inputs stay whole unless sequence parallel,
  the rest divides by ``t``, as the paper's ``sbh (10 + 24 / t + 5 as / (h t))``.) InternViT-6B's q/k
  norms add ``n e (a d + g d) / t``. With
  ``--recompute-granularity full`` (msmm recomputes every transformer layer) a layer keeps only its
  input, ``n e h r``; ``selective`` (msmm recomputes each attention block from its input) keeps the
  norm, linear and MLP terms; the recomputed part of one layer is added once as working memory.
  Activations are kept only where a gradient flows: a frozen vision encoder keeps none (one
  layer's working memory), a frozen text decoder in front of a trained projector keeps its
  frozen-layer share. The projector keeps its inputs and hidden activations; the last stage adds
  the logits ``n V / t (e + 8)`` (the logits, fp32 log-probabilities and their gradient).
  Pipeline: Megatron's 1F1B schedule keeps ``min(PP - stage, micro-batches)`` micro-batches in
  flight on a stage; interleaved (VPP) ``min((PP - stage - 1) 2 + (VPP - 1) PP + 1,
  micro-batches x VPP)`` chunk passes (Korthikanti's ``L (1 + (p - 1) / (p m))`` on the first
  stage). Not counted: framework workspace, communication buffers, fragmentation: keep headroom.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from msmm.checkpoint.mm import placement
from msmm.checkpoint.parallel import REPLICATED, VOCAB, ParallelConfig, padded_vocab, split_heads, split_shape, tp_kind
from msmm.registry import TEXT_DECODER, VISION_ENCODER, VISION_PROJECTOR, get_family

from .parallel.layout import LayoutError
from .parallel.validate import ValidatedLayout, runtime_refusals, validate_layout, world_size_of

GIB = 1 << 30
EXIT_INVALID, EXIT_DOES_NOT_FIT = 2, 3
FLASH_STATS_BYTES = 64  # Ascend FlashAttentionScore: softmax_max and softmax_sum, [B, N, S, 8] fp32 each
TIGHT = 0.9  # above this share of the device the plan says "tight"


# ---- the model, abstractly ------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    name: str  # state_dict name (MM name)
    shape: Tuple[int, ...]
    itemsize: int  # bytes per element in the run's dtype
    trainable: bool
    buffer: bool
    ident: int  # the same object under two names (tied weights) has one ident
    tied_alias: bool = False  # the second name of a tied weight (lm_head of tied embeddings): not in checkpoints


def describe_model(models: Any, config: Any, args: argparse.Namespace) -> Tuple[List[TensorInfo], Any]:
    """The tensors of the model ``args`` would train, built on the shape-only torch inside
    ``adapters.meta_torch.models_on_meta()`` (``models`` is that binding's ``msmm.models``):
    ``build_model``, the LoRA blocks (``apply_lora_config``) and the ``--bf16`` / ``--fp16`` cast,
    as ``msmm-train`` does. Returns (tensors, model)."""
    model = models.build_model(config)
    models.apply_lora_config(model, config)
    if args.bf16 or args.fp16:
        torch = sys.modules["torch"]
        model.to(torch.bfloat16 if args.bf16 else torch.float16)
    return model_tensors(model), model


def model_tensors(model: Any) -> List[TensorInfo]:
    """Every parameter and buffer of a model built on the shape-only torch, under each of its
    names (a tied weight appears under both, with one ``ident``)."""
    out: List[TensorInfo] = []
    aliases = {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
               for name in getattr(module, "tied_weights", {})}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for table, buffer in (("_parameters", False), ("_buffers", True)):
            for name, t in module.__dict__[table].items():
                if t is None:
                    continue
                full = f"{prefix}.{name}" if prefix else name
                out.append(TensorInfo(full, tuple(t.shape), t.dtype.itemsize, bool(getattr(t, "requires_grad", False))
                                      and not buffer, buffer, id(t), full in aliases))
    seen, unique = set(), []
    for t in out:  # a module reachable under two paths lists its tensors twice under different names
        if (t.name, t.ident) not in seen:
            seen.add((t.name, t.ident))
            unique.append(t)
    return unique


@dataclass
class RankShare:
    """What one (pipeline stage, tensor-parallel rank) holds."""

    params: int = 0  # elements of the parameters on the device
    trainable: int = 0
    tied_copy: int = 0  # of which a tied weight's copy (the last stage's lm_head of tied embeddings), which
    # mm-convert does not write: ``params - tied_copy`` is what its mp_rank directory holds
    weight_bytes: int = 0  # parameters and buffers in the run's dtype
    names: List[str] = field(default_factory=list)


def parallel_config(checked: ValidatedLayout) -> ParallelConfig:
    return ParallelConfig(checked.layout.tp, [list(c) for c in checked.text.pp_layers],
                          [list(c) for c in checked.vision.pp_layers]).resolved(checked.text.num_layers,
                                                                                 checked.vision.num_layers)


def split_tensors(tensors: Sequence[TensorInfo], parallel: ParallelConfig, where: str = "model",
                  vision_heads: Optional[int] = None) -> Tuple[Dict[Tuple[int, int], RankShare], Dict[str, Any]]:
    """Each tensor on its pipeline stage and split for TP as ``mm-convert hf_to_mm`` writes it
    (the vision encoder's attention by its ``vision_heads``, unevenly when TP does not divide
    them): {(stage, tp rank): RankShare}, and per split kind the tensors and elements (rank 0's,
    the largest)."""
    tp, pp = parallel.tp_size, parallel.pp_size
    shares = {(s, r): RankShare() for s in range(pp) for r in range(tp)}
    kinds: Dict[str, Any] = {}
    counted: Dict[Tuple[int, int], set] = {key: set() for key in shares}
    for t in sorted(tensors, key=lambda t: t.tied_alias):  # a tied weight's first name before its alias
        chunk, stage, _ = placement(t.name, parallel, where)
        kind = REPLICATED if t.buffer or tp == 1 else tp_kind(t.name, where)
        padded = padded_vocab(t.shape[0], tp, parallel.make_vocab_size_divisible_by) if kind == VOCAB else None
        heads = split_heads(t.name, vision_heads)
        entry = kinds.setdefault(kind, {"tensors": 0, "elements": 0, "vocab": set()})
        entry["tensors"] += 1
        entry["elements"] += math.prod(split_shape(kind, t.shape, tp, t.name, padded, heads))
        if kind == VOCAB:
            entry["vocab"].add((t.shape[0], padded))
        for rank in range(tp):
            numel = math.prod(split_shape(kind, t.shape, tp, t.name, padded, heads, rank))
            share = shares[(stage, rank)]
            if t.ident in counted[(stage, rank)]:
                continue  # a tied tensor is stored once on a rank that holds it under two names
            counted[(stage, rank)].add(t.ident)
            share.weight_bytes += numel * t.itemsize
            share.names.append(t.name)
            if not t.buffer:
                share.params += numel
                share.trainable += numel if t.trainable else 0
                share.tied_copy += numel if t.tied_alias else 0
    return shares, kinds


# ---- activations ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerShape:
    """One transformer layer as the activation formula sees it."""

    tokens: int  # n: tokens of one micro-batch through this layer (on one CP rank)
    hidden: int
    heads: int
    head_dim: int
    groups: int
    ffn: int
    swiglu: bool
    span: int  # attention span S (keys per query) for the non-flash softmax
    qk_norm: bool = False


@dataclass(frozen=True)
class ActivationSettings:
    elem: int  # e: bytes per activation element
    tp: int
    sequence_parallel: bool
    flash: bool
    recompute: Optional[str]  # None, "full", "selective"


def layer_activation_bytes(layer: LayerShape, s: ActivationSettings, trained: bool = True) -> Tuple[int, int, int]:
    """(stored without recompute, stored with the run's recompute, working memory of one
    recomputed layer) in bytes, per the formula in the module docstring. ``trained``: the layer
    has trained weights (LoRA counts); False for a frozen layer that gradients pass through."""
    t, e, n = s.tp, s.elem, layer.tokens
    r = 1.0 / t if s.sequence_parallel else 1.0
    q, kv = layer.heads * layer.head_dim, layer.groups * layer.head_dim
    norms = 2 * layer.hidden * r  # the inputs of the two norms
    linear_inputs = 2 * layer.hidden * r if trained else 0  # QKV and MLP inputs: for the weight gradients
    attention = (2 * q + 2 * kv) / t + ((q + kv) / t if layer.qk_norm else 0)  # Q, K, V, output (q/k norm inputs)
    mlp = ((4 if layer.swiglu else 2) if trained else (3 if layer.swiglu else 1)) * layer.ffn / t
    scores = n * (layer.heads / t) * (FLASH_STATS_BYTES if s.flash else e * layer.span)
    full = n * e * (norms + linear_inputs + attention + mlp) + scores
    if s.recompute == "full":
        return int(full), int(n * e * layer.hidden * r), int(full)
    if s.recompute == "selective":  # the attention block is recomputed from its input
        kept = n * e * (norms + (linear_inputs if trained else layer.hidden * r) + mlp)
        return int(full), int(kept), int(full - kept)
    return int(full), int(full), 0


@dataclass
class VisionInput:
    tokens_per_image: int  # vision-encoder tokens of one image at the largest size data.json allows
    images_per_sample: int  # tiles (InternVL) or images
    text_tokens_per_image: int  # what one of them becomes in the text sequence
    span: int  # attention span of a vision token
    how: str


def vision_input(config: Any, data_config: Any, seq_length: int, micro_batch: int) -> VisionInput:
    """One sample's vision-encoder input at the largest size ``data.json`` allows (one image;
    InternVL: all tiles of the largest tiling plus the thumbnail), capped by what fits in
    ``--seq-length`` text tokens."""
    encoder = config.sections[VISION_ENCODER]
    dataset = data_config.dataset_param if data_config is not None else None
    v = encoder.config
    if encoder.model_id == "intern_vit":
        grid = v["image_size"] // v["patch_size"]
        ratio = config.sections[VISION_PROJECTOR].config.get("downsample_ratio", 0.5)
        per_tile = int(round(grid * ratio)) ** 2
        tiles = 1
        if dataset is not None and dataset.dynamic_image_size:
            tiles = dataset.max_dynamic_patch + (1 if dataset.use_thumbnail and dataset.max_dynamic_patch > 1 else 0)
        fit = max(1, seq_length // per_tile)
        most = getattr(dataset, "max_dynamic_patch", "-")
        return VisionInput(grid * grid + 1, min(tiles, fit), per_tile, grid * grid + 1,
                           f"{min(tiles, fit)} tiles of {grid * grid + 1} patches (data.json max_dynamic_patch "
                           f"{most} + thumbnail, at most --seq-length / {per_tile})")
    if encoder.model_id == "clip_vit":
        grid = v["image_size"] // v["patch_size"]
        return VisionInput(grid * grid + 1, 1, grid * grid, grid * grid + 1,
                           f"1 image of {grid * grid + 1} patches")
    # Qwen2-VL / Qwen2.5-VL: dynamic resolution up to image_max_pixels, 2x2 patches merge into a token
    patch, merge = v.get("patch_size", 14), v.get("spatial_merge_size", 2)
    max_pixels = dataset.preprocess_parameters.image_max_pixels if dataset is not None else 28 * 28 * 1280
    unit = patch * merge
    patches = (max_pixels // (unit * unit)) * merge * merge
    patches = max(merge * merge, min(patches, seq_length * merge * merge))
    return VisionInput(patches, 1, patches // (merge * merge), patches * micro_batch,
                       f"1 image of {patches} patches (data.json image_max_pixels {max_pixels}, at most "
                       f"{merge * merge} x --seq-length)")


def _text_layer(config: Any, args: argparse.Namespace, cp: int) -> LayerShape:
    t = config.sections[TEXT_DECODER].config
    heads = t["num_attention_heads"]
    head_dim = t.get("kv_channels") or t["hidden_size"] // heads
    seq = args.seq_length
    return LayerShape(args.micro_batch_size * seq // cp, t["hidden_size"], heads, head_dim,
                      t.get("num_query_groups") or heads, t["ffn_hidden_size"], True, seq)


def _vision_layer(config: Any, vis: VisionInput, micro_batch: int) -> LayerShape:
    encoder = config.sections[VISION_ENCODER]
    v = encoder.config
    heads = v["num_attention_heads"]
    return LayerShape(micro_batch * vis.images_per_sample * vis.tokens_per_image, v["hidden_size"], heads,
                      v["hidden_size"] // heads, heads, v["ffn_hidden_size"], encoder.model_id == "qwen2_5_vit",
                      vis.span, bool(v.get("qk_layernorm", False)))


def _projector_bytes(config: Any, vis: VisionInput, micro_batch: int, s: ActivationSettings) -> int:
    """Inputs and hidden activations of the projector (kept when it or the encoder trains)."""
    hv = config.sections[VISION_ENCODER].config["hidden_size"]
    h = config.sections[TEXT_DECODER].config["hidden_size"]
    tokens = micro_batch * vis.images_per_sample * vis.text_tokens_per_image  # its output tokens
    kind = config.sections[VISION_PROJECTOR].model_id
    if kind == "pixel_shuffle_mlp":  # LayerNorm(C / r^2) -> linear_1 -> GELU -> linear_2
        ratio = config.sections[VISION_PROJECTOR].config.get("downsample_ratio", 0.5)
        cin = int(round(hv / (ratio * ratio)))
        per_token = 2 * cin + 2 * h / s.tp
    elif kind == "patch_merger":  # ln_q on patches, then mlp 4C -> 4C -> GELU -> h
        per_token = 4 * hv + 4 * hv + 8 * hv / s.tp
    else:  # LLaVA: linear_1 -> GELU -> linear_2
        per_token = hv + 2 * h / s.tp
    return int(tokens * s.elem * per_token)


# ---- the plan ---------------------------------------------------------------------------------------

@dataclass
class StagePlan:
    stage: int
    contents: List[str]  # "vision layers 0-44", "projector", "embed_tokens", "text layers 0-39", ...
    params: int  # per TP rank
    trainable: int
    weights: int  # bytes, per device
    grads: int
    optimizer: int
    activations: int
    in_flight: int  # micro-batches (chunk passes with VPP) whose activations are kept

    @property
    def holds(self) -> str:
        return "; ".join(self.contents)

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations


@dataclass
class Plan:
    checked: ValidatedLayout
    model_id: str
    source: str
    total_params: int
    trainable_params: int
    frozen_sections: List[str]
    stages: List[StagePlan]
    tp_kinds: Dict[str, Any]
    shares: Dict[Tuple[int, int], RankShare]
    device_bytes: int
    vision: VisionInput
    settings: ActivationSettings
    distributed_optimizer: bool
    warnings: List[str] = field(default_factory=list)
    refusals: List[str] = field(default_factory=list)  # what a real run would refuse (not implemented yet)

    @property
    def fits(self) -> bool:
        return all(s.total <= self.device_bytes for s in self.stages)

    def worst(self) -> StagePlan:
        return max(self.stages, key=lambda s: s.total)


def _in_flight(stage: int, pp: int, vpp: int, micro_batches: int) -> int:
    if pp == 1:
        return 1
    if vpp == 1:
        return min(pp - stage, micro_batches)
    return min((pp - stage - 1) * 2 + (vpp - 1) * pp + 1, micro_batches * vpp)


def _layers(what: str, span: Tuple[int, int]) -> str:
    return f"{what} layer {span[0]}" if span[0] == span[1] else f"{what} layers {span[0]}-{span[1]}"


def _ranges(placement: Any, stage: int, chunk: int) -> Optional[Tuple[int, int]]:
    for c, s, first, count in placement.layer_ranges():
        if c == chunk and s == stage and count:
            return first, first + count - 1
    return None


def make_plan(models: Any, config: Any, args: argparse.Namespace, checked: ValidatedLayout,
              data_config: Any = None) -> Plan:
    """The plan of a validated layout (call inside ``models_on_meta()``; ``models`` its msmm.models)."""
    lay = checked.layout
    tp, pp, vpp, cp, dp = lay.tp, lay.pp, lay.vpp, lay.cp, lay.dp
    tensors, model = describe_model(models, config, args)
    parallel = parallel_config(checked)
    shares, kinds = split_tensors(tensors, parallel, config.source,
                                  config.sections[VISION_ENCODER].config["num_attention_heads"])

    seq = args.seq_length
    if seq is None:
        cutoff = getattr(getattr(data_config, "dataset_param", None), "basic_parameters", None)
        seq = getattr(cutoff, "cutoff_len", None)
        if seq is None:
            raise LayoutError("--dry-run needs --seq-length (or data.json dataset_param.basic_parameters.cutoff_len) "
                              "for the activation estimate")
    plan_args = argparse.Namespace(**{**vars(args), "seq_length": seq})
    elem = 2 if (args.bf16 or args.fp16) else 4
    settings = ActivationSettings(elem, tp, checked.sequence_parallel, elem == 2, args.recompute_granularity)
    vis = vision_input(config, data_config, seq, args.micro_batch_size)
    text_layer = _text_layer(config, plan_args, cp)
    vision_layer = _vision_layer(config, vis, args.micro_batch_size)
    text_act = layer_activation_bytes(text_layer, settings, trained=True)
    # msmm's sequence parallelism splits the text decoder's sequence only
    vision_act = layer_activation_bytes(vision_layer, replace(settings, sequence_parallel=False), trained=True)
    projector_act = _projector_bytes(config, vis, args.micro_batch_size, settings)

    spec = get_family(config.model_id)
    by_section = {path: any(p.requires_grad for m in models.pretrained.section_modules(model, spec, path)
                            for p in m.parameters())
                  for path in (VISION_ENCODER, VISION_PROJECTOR, TEXT_DECODER)}
    keep_vision = by_section[VISION_ENCODER]
    keep_projector = keep_vision or by_section[VISION_PROJECTOR]
    keep_text = keep_projector or by_section[TEXT_DECODER]
    if keep_text and not by_section[TEXT_DECODER]:  # frozen, but the projector's gradients pass through it
        text_act = layer_activation_bytes(text_layer, settings, trained=False)
    vocab = config.sections[TEXT_DECODER].config.get("vocab_size", 0)
    logits = int(text_layer.tokens * padded_vocab(vocab, tp, 1) / tp * (elem + 8))

    vision_slots, text_slots = checked.vision.slots(), checked.text.slots()
    distributed = bool(getattr(args, "use_distributed_optimizer", False))
    optimizer_shards = dp * cp if distributed else 1
    stages = []
    for s in range(pp):
        share = shares[(s, 0)]
        contents: List[str] = []
        per_chunk = []
        working = 0
        for c in range(vpp):
            kept = 0
            parts: List[str] = []
            v = _ranges(checked.vision, s, c)
            if v:
                parts.append(_layers("vision", v))
                count = v[1] - v[0] + 1
                if keep_vision:
                    kept += count * vision_act[1]
                    working = max(working, vision_act[2])
                else:
                    working = max(working, vision_act[0])  # forward only: one layer at a time
            if vision_slots and (c, s) == vision_slots[-1]:
                parts.append("projector")
                kept += projector_act if keep_projector else 0
            if text_slots and (c, s) == text_slots[0]:
                parts.append("embed_tokens")
            t = _ranges(checked.text, s, c)
            if t:
                parts.append(_layers("text", t))
                count = t[1] - t[0] + 1
                if keep_text:
                    kept += count * text_act[1]
                    working = max(working, text_act[2])
                else:
                    working = max(working, text_act[0])
            if text_slots and (c, s) == text_slots[-1]:
                parts.append("final norm, lm_head, loss")
                working = max(working, logits)
            per_chunk.append(kept)
            if parts:
                contents.append(f"chunk {c}: {', '.join(parts)}" if vpp > 1 else ", ".join(parts))
        flight = _in_flight(s, pp, vpp, checked.num_microbatches)
        kept_total = sum(per_chunk[(k // pp) % vpp] for k in range(flight)) if vpp > 1 else flight * per_chunk[0]
        master = 4 if elem == 2 or distributed else 0  # the distributed optimizer keeps a master for every param
        stages.append(StagePlan(
            s, contents, share.params, share.trainable, share.weight_bytes, 4 * share.trainable,
            int(share.trainable * (8 + master) / optimizer_shards), kept_total + working, flight))

    total = sum(math.prod(t.shape) for t in {t.ident: t for t in tensors if not t.buffer}.values())
    trainable = sum(math.prod(t.shape) for t in {t.ident: t for t in tensors if t.trainable}.values())
    frozen = [path for path, section in config.sections.items() if section.freeze]
    plan = Plan(checked, config.model_id, config.source, total, trainable, frozen, stages, kinds, shares,
                int(args.device_memory_gb * GIB), vis, settings, distributed)
    plan.refusals = runtime_refusals(args, checked)
    return plan


# ---- the report ------------------------------------------------------------------------------------

def _b(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def _g(n: int) -> str:
    return f"{n / GIB:.1f}"


def format_plan(plan: Plan, args: argparse.Namespace) -> str:
    c = plan.checked
    lay = c.layout
    lines = [f"msmm-train --dry-run: {plan.source} ({plan.model_id}), data {args.mm_data}"]
    lines.append(f"layout: world {lay.world_size} ({c.world_source}) = TP {lay.tp} x PP {lay.pp} x CP {lay.cp} x "
                 f"DP {lay.dp}; rank = tp + TP (cp + CP (dp + DP pp))"
                 + (f"; {lay.vpp} virtual chunks per stage" if lay.vpp > 1 else "")
                 + (f"; CP algorithm {c.context_parallel_algo}" if lay.cp > 1 else ""))
    dtype = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    lines.append(f"batch: micro {args.micro_batch_size}, global {args.global_batch_size} = {c.num_microbatches} "
                 f"micro-batches per step on each of {lay.dp} data-parallel ranks; seq-length {args.seq_length}; "
                 f"{dtype}; recompute {args.recompute_granularity or 'off'}"
                 + ("; sequence parallel" if c.sequence_parallel else "")
                 + ("; distributed optimizer" if plan.distributed_optimizer else ""))
    lines.append(f"parameters: {_b(plan.total_params)} ({_b(plan.trainable_params)} trainable"
                 + (f"; frozen: {', '.join(plan.frozen_sections)}" if plan.frozen_sections else "") + ")")
    lines.append(f"placement: {TEXT_DECODER} {_fmt(c.text.pp_layers)} ({c.text.origin}); {VISION_ENCODER} "
                 f"{_fmt(c.vision.pp_layers)} ({c.vision.origin})")
    lines.append("")
    lines.append("stage | holds | params / TP rank | trainable / TP rank")
    for s in plan.stages:
        lines.append(f"{s.stage} | {s.holds} | {s.params:,} | {s.trainable:,}")
    lines.append("")
    lines.append(f"tensor parallel (TP {lay.tp}): " + tp_summary(plan))
    lines.append("")
    lines.append(f"vision input per sample: {plan.vision.how}; attention "
                 + ("flash (16-bit)" if plan.settings.flash else "with the softmax kept (fp32: no flash kernel)"))
    lines.append(f"memory per device (GiB of {_g(plan.device_bytes)}):")
    lines.append("stage | weights | grads | optimizer | activations (in flight) | total | fits")
    for s in plan.stages:
        verdict = "no" if s.total > plan.device_bytes else "tight" if s.total > TIGHT * plan.device_bytes else "yes"
        lines.append(f"{s.stage} | {_g(s.weights)} | {_g(s.grads)} | {_g(s.optimizer)} | {_g(s.activations)} "
                     f"({s.in_flight}) | {_g(s.total)} | {verdict}")
    worst = plan.worst()
    lines.append("")
    if plan.fits:
        lines.append(f"fits: the fullest device (stage {worst.stage}) needs {_g(worst.total)} of "
                     f"{_g(plan.device_bytes)} GiB (estimate; keep headroom for workspace and communication buffers)")
    else:
        lines.append(f"does not fit: stage {worst.stage} needs {_g(worst.total)} GiB, the device has "
                     f"{_g(plan.device_bytes)} (--device-memory-gb); more pipeline stages, tensor parallelism, "
                     "recompute, --use-distributed-optimizer or a smaller micro-batch / --seq-length reduce it")
    for note in c.notes:
        lines.append(f"note: {note}")
    for refusal in plan.refusals:
        lines.append(f"not implemented yet (a real run stops here): {refusal}")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _fmt(pp_layers: Sequence[Sequence[int]]) -> str:
    return str([list(x) for x in pp_layers]) if len(pp_layers) > 1 else str(list(pp_layers[0]))


def tp_summary(plan: Plan) -> str:
    k = plan.tp_kinds
    if plan.checked.layout.tp == 1:
        return "every tensor whole on its stage"
    parts = []
    labels = {"column": "column-split (output rows: q/k/v, gate/up, fc1, ...)",
              "fused_qkv": "fused q/k/v split part by part (Qwen ViT qkv)",
              "row": "row-split (input columns: o_proj, down_proj, fc2, ...)",
              "vocab": "vocabulary rows (embed_tokens, lm_head)",
              "replicated": "replicated (norms, row-split biases, patch/position embeddings)"}
    for kind, label in labels.items():
        if kind in k:
            extra = ""
            if kind == "vocab":
                extra = "; " + ", ".join(f"{v} padded to {p}, {p // plan.checked.layout.tp} rows per rank"
                                         for v, p in sorted(k[kind]["vocab"]))
            parts.append(f"{label}: {k[kind]['tensors']} tensors, {_b(k[kind]['elements'])} elements per rank{extra}")
    return "; ".join(parts)


# ---- --dry-run ------------------------------------------------------------------------------------

def missing_paths(args: argparse.Namespace, data_config: Any) -> List[str]:
    """Data, tokenizer and checkpoint paths that do not exist here (warnings in a dry run)."""
    out = []
    if data_config is not None:
        basic = data_config.dataset_param.basic_parameters
        for key in ("data_path", "dataset", "data_folder", "dataset_dir"):
            value = getattr(basic, key, None)
            if value and not os.path.exists(value):
                out.append(f"{data_config.source}: dataset_param.basic_parameters.{key} {value!r} does not exist here")
        tokenizer = data_config.dataset_param.tokenizer_config.from_pretrained
        if tokenizer and not os.path.exists(tokenizer):
            out.append(f"{data_config.source}: dataset_param.tokenizer_config.from_pretrained {tokenizer!r} does not "
                       "exist here")
    for flag in ("load", "lora_load"):
        value = getattr(args, flag, None)
        if value and not os.path.exists(value):
            out.append(f"--{flag.replace('_', '-')} {value!r} does not exist here")
    return out


def build_plan(args: argparse.Namespace, data_config: Any = None,
               section_overrides: Optional[Dict[str, Any]] = None) -> Plan:
    """Validate and plan ``args`` (raises LayoutError / ModelConfigError-like ValueError).
    ``section_overrides``: {section path: pipeline_num_layers} replacing model.json's (for
    planning layouts without editing the file, e.g. tools/parallel_plans.py)."""
    from adapters.meta_torch import models_on_meta

    world, source = world_size_of(args)
    with models_on_meta() as models:
        config = models.load_model_config(args.mm_model, args.allow_unknown_keys)
        if getattr(args, "lora", None) is not None:
            text = config.sections[TEXT_DECODER]
            if text.lora is not None:
                raise models.ModelConfigError(f"{args.mm_model}: text_decoder.lora and --lora-r both configure LoRA on "
                                              "the text decoder; give one")
            text.lora = args.lora
        for path, value in (section_overrides or {}).items():
            config.sections[path].pipeline_num_layers = (
                None if value is None else models.model_config.parse_pipeline_num_layers(value, path))
        checked = validate_layout(args, config, world, source)
        plan = make_plan(models, config, args, checked, data_config)
    plan.warnings = missing_paths(args, data_config)
    return plan


def check_run_layout(args: argparse.Namespace) -> Optional[ValidatedLayout]:
    """A real run's start-up check: ``model.json`` parsed on the shape-only torch (before
    MindSpore starts), the layout validated on msrun's world size, and what the runtime does not
    implement yet refused; raises LayoutError / ValueError (model.json) naming flags and keys.
    If the shape-only torch cannot import the model files (a torch API their module level uses
    that ``adapters/meta_torch.py`` lacks), the run is not blocked: a warning, and None."""
    from adapters.meta_torch import models_on_meta

    world, source = world_size_of(args)
    try:
        with models_on_meta() as models:
            config = models.load_model_config(args.mm_model, args.allow_unknown_keys)
            if getattr(args, "lora", None) is not None:
                config.sections[TEXT_DECODER].lora = args.lora
            checked = validate_layout(args, config, world, source)
    except (LayoutError, ValueError):  # model.json or the layout: the user's to fix
        raise
    except Exception as err:  # noqa: BLE001 - the planning shim must never stop a run
        print(f"msmm-train: warning: the start-up layout check could not import the model files on the shape-only "
              f"torch ({type(err).__name__}: {err}); the layout is checked when the model is built", file=sys.stderr)
        return None
    refusals = runtime_refusals(args, checked)
    if refusals:
        raise LayoutError(refusals[0])
    return checked


def dry_run(args: argparse.Namespace, data_config: Any = None, out: Optional[TextIO] = None) -> int:
    """``msmm-train --dry-run``: print the plan (to ``out``, default stdout); 0 valid and fits,
    2 invalid, 3 does not fit."""
    from adapters.meta_torch import MetaTorchError

    try:
        plan = build_plan(args, data_config)
    except (LayoutError, ValueError, KeyError) as err:  # ModelConfigError is a ValueError (of the meta binding)
        message = str(err) if not isinstance(err, KeyError) else err.args[0]
        print(f"msmm-train: {message}", file=sys.stderr)
        return EXIT_INVALID
    except MetaTorchError as err:  # a model's __init__ uses a torch API the shape-only torch lacks
        print(f"msmm-train: --dry-run cannot build the model shape-only: {err}", file=sys.stderr)
        return EXIT_INVALID
    print(format_plan(plan, args), file=out or sys.stdout)
    if not plan.fits:
        worst = plan.worst()
        print(f"msmm-train: --dry-run: does not fit: pipeline stage {worst.stage} needs {_g(worst.total)} GiB per "
              f"device, --device-memory-gb is {args.device_memory_gb:g}", file=sys.stderr)
    return 0 if plan.fits else EXIT_DOES_NOT_FIT


__all__ = ["EXIT_DOES_NOT_FIT", "EXIT_INVALID", "Plan", "StagePlan", "TensorInfo", "build_plan", "describe_model",
           "dry_run", "format_plan", "layer_activation_bytes", "make_plan", "split_tensors"]
