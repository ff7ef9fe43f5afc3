"""The parallel layout of a run checked against the model, before anything is built.

``msmm-train`` calls :func:`validate_layout` at start-up (and ``--dry-run`` does, before it
plans memory) with the parsed arguments, the parsed ``model.json`` and the world size. It
returns where every layer goes, or raises :class:`LayoutError` whose message names the flags
and ``model.json`` keys involved and their numbers:

* the world size divisible by TP x PP x CP (``layout.ParallelLayout``);
* every count tensor parallelism splits divisible by TP: attention heads and key/value groups
  of the text decoder, the vision encoder's heads, both FFN sizes; with ``--unaligned-linear``
  (MindSpeed-MM's, for InternViT-6B's 25 heads) InternViT's and CLIP's heads need not divide
  (split unevenly, ``msmm.checkpoint.parallel.heads_per_rank``), only be at least TP;
* the layers of each section over the pipeline stages: MindSpeed-MM's per-section
  ``pipeline_num_layers`` (``[6, 8, 8, 6]``; with virtual stages one list per chunk,
  ``[[2, 2], [2, 2]]``, the layout mm-convert's ``llm_pp_layers`` / ``vit_pp_layers`` take), one
  entry per stage, adding up to ``num_layers``; without it the text decoder is split evenly
  (``num_layers`` divisible by PP x VPP) and the vision encoder sits on the first stage (as
  mm-convert places it by default); the vision encoder must come before the text decoder;
  no stage may be empty;
* virtual pipeline stages from ``--virtual-pipeline-model-parallel-size`` or Megatron's
  ``--num-layers-per-virtual-pipeline-stage``; the interleaved schedule needs the number of
  micro-batches divisible by PP;
* context parallelism: ``--seq-length`` divisible by 2 x CP (``megatron_cp_algo``'s
  load-balanced ring) or by CP with the heads of a TP rank divisible by CP (``ulysses_cp_algo``);
* sequence parallelism: ``--seq-length`` divisible by TP;
* ``--global-batch-size`` divisible by ``--micro-batch-size`` x the data-parallel size.

:func:`runtime_refusals` lists what a real run cannot do yet (a ``--dry-run`` plans it all).
Framework-free: ``model.json`` comes parsed (on the shape-only torch before MindSpore starts).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from msmm.registry import TEXT_DECODER, VISION_ENCODER

from .layout import LayoutError, ParallelLayout

WORLD_ENV = "MS_WORKER_NUM"  # what msrun sets in every worker: the number of workers of the job
CP_ALGOS = ("megatron_cp_algo", "ulysses_cp_algo")
# the vision encoders a pipeline can split over stages (msmm/train/pipeline/stage.py: embed, layers, finish)
SPLITTABLE_VISION_ENCODERS = ("intern_vit", "clip_vit")
UNALIGNED_VISION_ENCODERS = ("intern_vit", "clip_vit")  # whose heads --unaligned-linear splits unevenly

PpLayers = Tuple[Tuple[int, ...], ...]  # layers per (virtual chunk, stage)


def world_size_of(args: argparse.Namespace) -> Tuple[int, str]:
    """(world size, where it came from): ``--world-size``, else msrun's ``MS_WORKER_NUM``, else 1."""
    given = getattr(args, "world_size", None)
    if given is not None:
        return given, "--world-size"
    env = os.environ.get(WORLD_ENV)
    if env is not None:
        try:
            return int(env), f"{WORLD_ENV}={env} (msrun)"
        except ValueError:
            raise LayoutError(f"{WORLD_ENV}={env!r} (set by msrun) is not an integer") from None
    return 1, "one process (no --world-size, no msrun)"


@dataclass(frozen=True)
class SectionPlacement:
    """How one layered section (``text_decoder``, ``image_encoder.vision_encoder``) is spread."""

    section: str
    num_layers: int
    pp_layers: PpLayers  # [virtual chunk][stage] -> layers
    origin: str  # where the split came from (model.json key, even split, first stage)
    model_id: str = ""  # the section's model (intern_vit, qwen2, ...)

    def slots(self) -> List[Tuple[int, int]]:
        """(chunk, stage) slots holding layers of this section, in model order."""
        return [(c, s) for c, counts in enumerate(self.pp_layers) for s, n in enumerate(counts) if n]

    def layer_ranges(self) -> List[Tuple[int, int, int, int]]:
        """(chunk, stage, first global layer, count) for every slot in model order."""
        out, start = [], 0
        for c, counts in enumerate(self.pp_layers):
            for s, n in enumerate(counts):
                out.append((c, s, start, n))
                start += n
        return out


@dataclass
class ValidatedLayout:
    layout: ParallelLayout
    world_source: str
    text: SectionPlacement
    vision: SectionPlacement
    num_microbatches: int  # per data-parallel rank and step (global / (micro x dp))
    sequence_parallel: bool  # in effect (asked for, with TP > 1)
    context_parallel_algo: str
    notes: List[str] = field(default_factory=list)  # flags that change nothing here, said once
    lora: bool = False  # LoRA on some section (--lora-r or a model.json lora block)

    @property
    def vpp(self) -> int:
        return self.layout.vpp


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _section_numbers(config, path: str) -> dict:
    section = config.sections[path]
    values = dict(section.config)
    if path == TEXT_DECODER and values.get("num_query_groups") is None:
        values["num_query_groups"] = values["num_attention_heads"]
    return values


def _divisors_of_all(counts: Sequence[int], limit: int) -> List[int]:
    return [d for d in range(1, max(limit, 1) + 1) if all(c % d == 0 for c in counts)]


def tensor_parallel_counts(config) -> List[Tuple[str, int]]:
    """(model.json key, count) of everything tensor parallelism splits into equal shares."""
    text, vision = _section_numbers(config, TEXT_DECODER), _section_numbers(config, VISION_ENCODER)
    return [(f"{TEXT_DECODER}.num_attention_heads", text["num_attention_heads"]),
            (f"{TEXT_DECODER}.num_query_groups", text["num_query_groups"]),
            (f"{TEXT_DECODER}.ffn_hidden_size", text["ffn_hidden_size"]),
            (f"{VISION_ENCODER}.num_attention_heads", vision["num_attention_heads"]),
            (f"{VISION_ENCODER}.ffn_hidden_size", vision["ffn_hidden_size"])]


def tensor_parallel_sizes(config, limit: int) -> List[int]:
    """The TP sizes up to ``limit`` that divide every count of :func:`tensor_parallel_counts`."""
    return _divisors_of_all([n for _, n in tensor_parallel_counts(config)], limit)


def _check_tensor_parallel(args: argparse.Namespace, config, tp: int, world: int) -> None:
    """Every count TP splits divides by TP (errors name the model.json key and --tensor-model-parallel-size);
    with ``--unaligned-linear`` the vision encoder's heads need not (MindSpeed-MM's uneven head split of
    InternViT / CLIP attention; not the Qwen ViT's fused qkv), but every rank needs one."""
    counts = tensor_parallel_counts(config)
    vision_heads = f"{VISION_ENCODER}.num_attention_heads"
    unaligned = (getattr(args, "unaligned_linear", False)
                 and config.sections[VISION_ENCODER].model_id in UNALIGNED_VISION_ENCODERS)
    if unaligned and dict(counts)[vision_heads] < tp:
        raise LayoutError(f"--unaligned-linear: --tensor-model-parallel-size {tp} is more than {vision_heads} "
                          f"{dict(counts)[vision_heads]} ({config.source}); every rank needs a head")
    bad = [(key, n) for key, n in counts if n % tp and not (unaligned and key == vision_heads)]
    if bad:
        ok = _divisors_of_all([n for _, n in counts], world)
        raise LayoutError(
            f"--tensor-model-parallel-size {tp} does not divide "
            + ", ".join(f"{key} {n}" for key, n in bad)
            + f" ({config.source}); every tensor-parallel rank needs whole heads and equal FFN shards. TP sizes that "
            f"divide every split count of this model (up to the world size {world}): {ok}"
            + ("" if not any(key == vision_heads for key, _ in bad) else
               " (--unaligned-linear splits the vision encoder's heads unevenly, as MindSpeed-MM does for "
               "InternViT-6B's 25 heads; not the Qwen ViT's)"))
    lora = getattr(args, "lora", None) is not None or any(s.lora is not None for s in config.sections.values())
    if tp > 1 and lora:
        raise LayoutError(f"LoRA (--lora-r or a model.json lora block) with --tensor-model-parallel-size {tp}: LoRA on "
                          "tensor-parallel layers is not implemented yet; use --tensor-model-parallel-size 1")


def _resolve_vpp(args: argparse.Namespace, config, pp: int) -> int:
    vpp_flag = getattr(args, "virtual_pipeline_model_parallel_size", None)
    per_stage = getattr(args, "num_layers_per_virtual_pipeline_stage", None)
    text_layers = config.sections[TEXT_DECODER].config["num_layers"]
    if vpp_flag is not None and per_stage is not None:
        raise LayoutError("--virtual-pipeline-model-parallel-size and --num-layers-per-virtual-pipeline-stage both set "
                          "the virtual pipeline size; give one")
    if per_stage is not None:
        if pp == 1:
            raise LayoutError(f"--num-layers-per-virtual-pipeline-stage {per_stage} needs "
                              "--pipeline-model-parallel-size > 1")
        if text_layers % pp or (text_layers // pp) % per_stage:
            raise LayoutError(
                f"--num-layers-per-virtual-pipeline-stage {per_stage}: {TEXT_DECODER}.num_layers {text_layers} / "
                f"--pipeline-model-parallel-size {pp} = {text_layers / pp:g} layers per stage, which is not a multiple "
                f"of {per_stage} (Megatron derives the virtual size as num_layers / PP / this)")
        return text_layers // pp // per_stage
    if vpp_flag is not None:
        return vpp_flag
    for path in (TEXT_DECODER, VISION_ENCODER):
        given = config.sections[path].pipeline_num_layers
        if given is not None and len(given) > 1:
            raise LayoutError(f"{config.source}: {path}.pipeline_num_layers has {len(given)} virtual chunks (a list of "
                              f"lists): pass --virtual-pipeline-model-parallel-size {len(given)}")
    return 1


def _placement(config, path: str, pp: int, vpp: int) -> SectionPlacement:
    section = config.sections[path]
    layers = section.config["num_layers"]
    key = f"{config.source}: {path}.pipeline_num_layers"
    given = section.pipeline_num_layers
    if given is not None:
        shape = (len(given), {len(c) for c in given})
        if vpp > 1 and len(given) != vpp:
            raise LayoutError(f"{key} = {_show(given)} has {len(given)} virtual chunk(s), "
                              f"--virtual-pipeline-model-parallel-size is {vpp}: give one list of {pp} stage counts "
                              "per virtual chunk")
        if shape[1] != {pp}:
            raise LayoutError(f"{key} = {_show(given)} has {sorted(shape[1])} entries per chunk, "
                              f"--pipeline-model-parallel-size is {pp}: give one layer count per pipeline stage")
        if sum(map(sum, given)) != layers:
            raise LayoutError(f"{key} = {_show(given)} adds up to {sum(map(sum, given))} layers, {path}.num_layers is "
                              f"{layers}")
        return SectionPlacement(path, layers, tuple(tuple(c) for c in given), f"{path}.pipeline_num_layers",
                                section.model_id)
    if path == VISION_ENCODER:  # mm-convert's default: the whole encoder on the first stage
        first = (layers,) + (0,) * (pp - 1)
        rest = tuple((0,) * pp for _ in range(vpp - 1))
        origin = "one stage" if pp * vpp == 1 else "first stage (no pipeline_num_layers)"
        return SectionPlacement(path, layers, (first,) + rest, origin, section.model_id)
    slots = pp * vpp
    if layers % slots:
        raise LayoutError(
            f"{path}.num_layers {layers} ({config.source}) does not divide evenly over --pipeline-model-parallel-size "
            f"{pp}" + (f" x {vpp} virtual chunks" if vpp > 1 else "")
            + f"; give {path}.pipeline_num_layers (layers per stage{', per chunk' if vpp > 1 else ''}, adding up to "
            f"{layers}) in model.json")
    each = layers // slots
    origin = "one stage" if slots == 1 else f"even split ({each} per stage{' and chunk' if vpp > 1 else ''})"
    return SectionPlacement(path, layers, tuple(tuple(each for _ in range(pp)) for _ in range(vpp)), origin,
                            section.model_id)


def _show(pp_layers: PpLayers) -> str:
    return str([list(c) for c in pp_layers]) if len(pp_layers) > 1 else str(list(pp_layers[0]))


def _check_placements(text: SectionPlacement, vision: SectionPlacement, pp: int, vpp: int, source: str) -> None:
    occupied = set(text.slots()) | set(vision.slots())
    empty = [(c, s) for c in range(vpp) for s in range(pp) if (c, s) not in occupied]
    if empty:
        c, s = empty[0]
        raise LayoutError(
            f"pipeline stage {s}" + (f" (virtual chunk {c})" if vpp > 1 else "")
            + f" holds no layer: {TEXT_DECODER} {_show(text.pp_layers)} ({text.origin}), {VISION_ENCODER} "
            f"{_show(vision.pp_layers)} ({vision.origin}) ({source}); give every stage layers or use a smaller "
            "--pipeline-model-parallel-size")
    if vision.slots() and text.slots() and vision.slots()[-1] > text.slots()[0]:
        c, s = vision.slots()[-1]
        raise LayoutError(
            f"{VISION_ENCODER}.pipeline_num_layers {_show(vision.pp_layers)} puts vision layers on stage {s}"
            + (f" of chunk {c}" if vpp > 1 else "")
            + f", after the first text layers ({TEXT_DECODER} {_show(text.pp_layers)}) ({source}): the vision encoder "
            "feeds the text decoder, so its stages must come first")


def validate_layout(args: argparse.Namespace, config, world_size: int,
                    world_source: str = "--world-size") -> ValidatedLayout:
    """The checked layout of ``args`` on ``world_size`` ranks for the parsed ``model.json``
    ``config``; :class:`LayoutError` naming flags, keys and numbers otherwise."""
    tp = args.tensor_model_parallel_size
    pp = args.pipeline_model_parallel_size
    cp = args.context_parallel_size
    vpp = _resolve_vpp(args, config, pp)
    layout = ParallelLayout(world_size, tp=tp, pp=pp, cp=cp, vpp=vpp)
    notes: List[str] = []
    _check_tensor_parallel(args, config, tp, world_size)

    text = _placement(config, TEXT_DECODER, pp, vpp)
    vision = _placement(config, VISION_ENCODER, pp, vpp)
    _check_placements(text, vision, pp, vpp, config.source)

    seq = None if getattr(args, "variable_seq_lengths", False) else args.seq_length
    algo = getattr(args, "context_parallel_algo", None) or CP_ALGOS[0]
    if cp > 1:
        if algo not in CP_ALGOS:
            raise LayoutError(f"--context-parallel-algo {algo} with --context-parallel-size {cp}: only "
                              f"{' and '.join(CP_ALGOS)} are planned")
        if args.seq_length is None:
            raise LayoutError(f"--context-parallel-size {cp} needs --seq-length (each CP rank takes a fixed share)")
        if algo == "megatron_cp_algo" and args.seq_length % (2 * cp):
            raise LayoutError(f"--seq-length {args.seq_length} is not divisible by 2 x --context-parallel-size {cp} = "
                              f"{2 * cp} (--context-parallel-algo megatron_cp_algo gives each CP rank two chunks of "
                              "the sequence, one from each end, to balance causal attention)")
        if algo == "ulysses_cp_algo":
            heads = config.sections[TEXT_DECODER].config["num_attention_heads"] // tp
            if args.seq_length % cp or heads % cp:
                raise LayoutError(
                    f"--context-parallel-algo ulysses_cp_algo with --context-parallel-size {cp} needs --seq-length "
                    f"{args.seq_length} and the {heads} heads of a tensor-parallel rank ({TEXT_DECODER}."
                    f"num_attention_heads / --tensor-model-parallel-size {tp}) divisible by {cp}")
    sequence_parallel = bool(getattr(args, "sequence_parallel", False)) and tp > 1
    if getattr(args, "sequence_parallel", False) and tp == 1:
        notes.append("--sequence-parallel: no effect with --tensor-model-parallel-size 1 (as in Megatron)")
    if sequence_parallel and seq is not None and seq % tp:
        raise LayoutError(f"--sequence-parallel: --seq-length {seq} is not divisible by --tensor-model-parallel-size "
                          f"{tp} (each TP rank holds an equal slice of the sequence outside attention and MLP)")
    if tp == 1 and getattr(args, "unaligned_linear", False):
        notes.append("--unaligned-linear: no effect with --tensor-model-parallel-size 1")

    micro, glob = args.micro_batch_size, args.global_batch_size
    if glob % (micro * layout.dp):
        raise LayoutError(
            f"--global-batch-size {glob} is not a multiple of --micro-batch-size {micro} x the data-parallel size "
            f"{layout.dp} (world {world_size} / (--tensor-model-parallel-size {tp} x --pipeline-model-parallel-size "
            f"{pp} x --context-parallel-size {cp})) = {micro * layout.dp}")
    micro_batches = glob // (micro * layout.dp)
    if vpp > 1 and micro_batches % pp:
        raise LayoutError(
            f"the interleaved pipeline schedule (virtual size {vpp}) needs the number of micro-batches per step, "
            f"--global-batch-size {glob} / (--micro-batch-size {micro} x data-parallel size {layout.dp}) = "
            f"{micro_batches}, divisible by --pipeline-model-parallel-size {pp}")
    lora = getattr(args, "lora", None) is not None or any(s.lora is not None for s in config.sections.values())
    return ValidatedLayout(layout, world_source, text, vision, micro_batches, sequence_parallel, algo, notes, lora)


def runtime_refusals(args: argparse.Namespace, checked: ValidatedLayout) -> List[str]:
    """What this layout asks for that the training runtime does not implement yet (a real run
    stops on the first; ``--dry-run`` plans them). Data, tensor (with sequence parallelism) and
    pipeline parallelism (1F1B, interleaved virtual stages) and the distributed optimizer are
    implemented."""
    out = []
    lay = checked.layout
    vision, text = checked.vision, checked.text
    vision_slots = vision.slots() or [(0, 0)]
    if len(vision_slots) > 1 and vision.model_id not in SPLITTABLE_VISION_ENCODERS:
        out.append(f"{VISION_ENCODER}.pipeline_num_layers {_show(vision.pp_layers)} ({vision.origin}): the "
                   f"{vision.model_id} vision encoder split over pipeline stages is not implemented yet (InternViT's and "
                   f"CLIP's are); put all its layers on the first stage ([{vision.num_layers}, 0, ...], as MindSpeed-MM's "
                   "recipes for it do)")
    if lay.pp > 1 and text.slots() and text.slots()[0] != vision_slots[-1]:
        out.append(f"{TEXT_DECODER}.pipeline_num_layers {_show(text.pp_layers)} ({text.origin}): the first text layer "
                   f"is not on the stage where the vision encoder ends ({VISION_ENCODER}.pipeline_num_layers "
                   f"{_show(vision.pp_layers)}), so the token embeddings (placed with the first text layer, as mm-convert "
                   "places them) would not be where the vision features are spliced in; start the text layers there "
                   "(Qwen2-VL-7B's recipe: [1, 10, 10, 7] after [32, 0, 0, 0])")
    if lay.pp > 1 and checked.lora:
        out.append(f"LoRA (--lora-r or a model.json lora block) with --pipeline-model-parallel-size {lay.pp}: not "
                   "implemented yet (the PEFT adapter files would hold only the first stage's adapters); use "
                   "--pipeline-model-parallel-size 1")
    if lay.cp > 1 and checked.context_parallel_algo != "megatron_cp_algo":
        out.append(f"--context-parallel-algo {checked.context_parallel_algo}: not implemented yet (megatron_cp_algo "
                   "is: load-balanced sequence split, attention over all-gathered keys and values)")
    if lay.cp > 1 and lay.pp > 1:
        out.append(f"--context-parallel-size {lay.cp} with --pipeline-model-parallel-size {lay.pp}: not implemented "
                   "yet; drop one of them")
    if lay.cp > 1 and checked.sequence_parallel:
        out.append(f"--context-parallel-size {lay.cp} with --sequence-parallel: not implemented yet; drop one of them")
    if checked.sequence_parallel and lay.pp > 1:
        out.append(f"--sequence-parallel with --pipeline-model-parallel-size {lay.pp}: sequence parallelism across "
                   "pipeline stages is not implemented yet; drop one of them")
    return out


__all__ = ["CP_ALGOS", "LayoutError", "SectionPlacement", "ValidatedLayout", "WORLD_ENV", "runtime_refusals",
           "tensor_parallel_counts", "tensor_parallel_sizes", "validate_layout", "world_size_of"]
