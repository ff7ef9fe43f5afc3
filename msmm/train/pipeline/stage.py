"""The part of a model one pipeline rank holds, and the forward of each of its chunks.

Megatron's placement, the one mm-convert writes (``msmm.checkpoint.mm.placement``): the text
decoder's layers are spread over the virtual stages in model order (chunk 0 of stages 0..PP-1,
then chunk 1, ...), ``pipeline_num_layers`` per stage, and so are a vision encoder's; the vision
encoder's patch embedding runs with its first layer, its head, the projector and the token
embeddings on the stage where it ends (where the text layers start); the final norm, the output
layer and the loss in the last virtual stage. A rank keeps the modules with a parameter placed
on it; the others are replaced by parameter-free placeholders (so kept layers keep their global
names).

The whole model is built (and its pretrained weights loaded, LoRA applied) on the host first,
as in one process, then pruned here: a rank builds every parameter once, on the host, and
keeps only its stage's for training.

A chunk's forward is the model's own forward cut at layer boundaries: ``embed_inputs`` (the
vision features spliced into the token embeddings), the decoder's ``layer_inputs`` (rotary
tables, attention mask), its layers, then ``norm`` and ``lm_head``; the pipeline tests check it
against the unsplit model.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from adapters.torch import Tensor, nn  # the model files run on adapters.torch under msmm-train

from msmm.checkpoint.mm import placement
from msmm.checkpoint.parallel import ParallelConfig


class PipelineError(ValueError):
    """A model or layout the pipeline runtime cannot split; the message names what to change."""


class Dropped(nn.Module):
    """Stands in for a module another pipeline rank holds (no parameters; never called)."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this module is held by another pipeline stage")


@dataclass(frozen=True)
class ChunkPlacement:
    chunk: int
    first: bool  # the first virtual stage: starts from the batch (vision tower or token embeddings)
    last: bool  # the last virtual stage: final norm, output layer, loss
    layers: Tuple[int, ...]  # global indices of its text decoder layers
    vision_layers: Tuple[int, ...] = ()  # global indices of its vision encoder layers (a split encoder)
    vision_end: bool = False  # a split encoder ends here: its head, the projector and the token embeddings


def _slots(pp_layers: List[List[int]]) -> List[Tuple[int, int, Tuple[int, ...]]]:
    """(chunk, stage, global layer indices) of every slot, in model order."""
    start, out = 0, []
    for chunk, counts in enumerate(pp_layers):
        for stage, count in enumerate(counts):
            out.append((chunk, stage, tuple(range(start, start + count))))
            start += count
    return out


def vision_is_split(parallel: ParallelConfig) -> bool:
    """Whether the vision encoder's layers span more than the first slot."""
    return any(layers for c, s, layers in _slots(parallel.vit_pp_layers) if (c, s) != (0, 0))


def rank_chunks(parallel: ParallelConfig, pp_rank: int) -> List[ChunkPlacement]:
    """The chunks pipeline rank ``pp_rank`` runs, in chunk order."""
    pp, vpp = parallel.pp_size, parallel.vpp_size
    vision = {(c, s): layers for c, s, layers in _slots(parallel.vit_pp_layers)}
    split = vision_is_split(parallel)
    vision_last = max((c, s) for (c, s), layers in vision.items() if layers) if split else None
    return [ChunkPlacement(chunk, chunk == 0 and stage == 0, chunk == vpp - 1 and stage == pp - 1, layers,
                           vision[(chunk, stage)] if split else (), (chunk, stage) == vision_last)
            for chunk, stage, layers in _slots(parallel.llm_pp_layers) if stage == pp_rank]


def check_pipeline_model(model: nn.Module, parallel: ParallelConfig) -> None:
    """What this runtime needs of a model to split it (errors name the model.json key)."""
    if vision_is_split(parallel) and not hasattr(model, "embed_vision_hidden"):
        raise PipelineError(f"image_encoder.vision_encoder.pipeline_num_layers {parallel.vit_pp_layers}: "
                            f"{type(model).__name__}'s vision encoder cannot be split over pipeline stages (InternVL's "
                            "and LLaVA's can); put all its layers on the first stage")
    decoder = model.get_decoder()
    if decoder.tied_weights:
        raise PipelineError("text_decoder.tie_word_embeddings: tied input and output embeddings across pipeline stages "
                            "are not implemented (the first and last stage would each need a copy and a gradient "
                            "all-reduce); train this model without pipeline parallelism")
    for name, module in model.named_modules():
        for attr in DROPOUT_ATTRIBUTES:
            rate = getattr(module, attr, 0.0)
            if isinstance(rate, float) and rate > 0:
                raise PipelineError(f"{name}.{attr}: dropout {rate} with pipeline parallelism is not implemented (a "
                                    "stage's backward recomputes its forward, which would draw other dropout masks); "
                                    "set the model's dropout rates (and --lora-dropout) to 0")


# module attributes that hold a dropout probability in msmm's model files
DROPOUT_ATTRIBUTES = ("hidden_dropout", "attention_dropout", "dropout", "dropout_p", "rate")  # rate: DropPath


def _keyword_inputs(fn: Callable[..., Any], inputs: Dict, skip: Tuple[str, ...] = ()) -> Dict:
    keys = [k for k in inspect.signature(fn).parameters if k not in skip]
    return {k: inputs[k] for k in keys if k in inputs}


class PipelineChunk(nn.Module):
    """One chunk's forward: ``(hidden, inputs) -> hidden``; the first chunk starts from the
    batch (``hidden`` None), the last returns the logits [B, L, V]. Text hidden states are
    [B, L, hidden]; a vision encoder split over stages passes its own ([N, tokens, width])
    until the stage where it ends, which projects and splices them into the token embeddings."""

    def __init__(self, model: nn.Module, place: ChunkPlacement) -> None:
        super().__init__(auto_prefix=False)  # the model's parameters keep their names
        self.model, self.place = model, place
        decoder = model.get_decoder()
        self.decoder = decoder.model
        self.layers = nn.ModuleList([decoder.model.layers[i] for i in place.layers])
        self.lm_head = decoder.lm_head if place.last else None
        self.split_vision = bool(place.vision_layers) or place.vision_end
        if self.split_vision:
            self.vision_layers = nn.ModuleList([model.vision_tower.layers[i] for i in place.vision_layers])

    def forward(self, hidden: Optional[Tensor], inputs: Dict) -> Tensor:
        if self.split_vision:
            if self.place.first:
                hidden = self.model.vision_tower.embed(inputs["pixel_values"])
            for layer in self.vision_layers:
                hidden = layer(hidden)
            if not self.place.vision_end:
                return hidden
            hidden = self.model.embed_vision_hidden(vision_hidden=hidden, **_keyword_inputs(
                self.model.embed_vision_hidden, inputs, ("vision_hidden",)))
        elif self.place.first:
            hidden = self.model.embed_inputs(**_keyword_inputs(self.model.embed_inputs, inputs))
        rotary, mask = self.decoder.layer_inputs(hidden, inputs.get("position_ids"), inputs.get("attention_mask"),
                                                 inputs.get("segment_ids"))
        for layer in self.layers:
            hidden = layer(hidden, rotary, mask)
        if self.place.last:
            return self.lm_head(self.decoder.norm(hidden))
        return hidden


def _prune(module: nn.Module, kept, prefix: str = "") -> None:
    """Replace every submodule holding parameters of which none is in ``kept`` (names) by a
    ``Dropped``; modules without parameters (rotary tables, activations) stay."""
    for name, child in list(module.named_children()):
        path = prefix + name
        names = [path + "." + n for n, _ in child.named_parameters()]
        if names and not any(n in kept for n in names):
            setattr(module, name, Dropped())  # (for a CellList, __setitem__ would rename parameters)
        elif names:
            _prune(child, kept, path + ".")


class PipelineStage:
    """Pipeline rank ``pp_rank``'s part of ``model`` (pruned in place) and its chunks.

    ``names`` maps each kept parameter's (global) name to where a checkpoint holds it: the
    chunk and the name with the stage-local layer index (mm-convert's ``mp_rank_*_{pp:03d}``
    layout)."""

    def __init__(self, model: nn.Module, parallel: ParallelConfig, pp_rank: int) -> None:
        check_pipeline_model(model, parallel)
        self.model, self.parallel, self.pp_rank = model, parallel, pp_rank
        self.places = rank_chunks(parallel, pp_rank)
        self.chunks = [PipelineChunk(model, place) for place in self.places]
        self.names: Dict[str, Tuple[int, str]] = {}
        for name, _ in model.named_parameters():
            chunk, stage, local = placement(name, parallel, "the model")
            if stage == pp_rank:
                self.names[name] = (chunk, local)
        _prune(model, self.names)

    def saved_tensors(self, state: Dict[str, np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """The model's state as a checkpoint stores it: per chunk, {stage-local name: array}."""
        out: List[Dict[str, np.ndarray]] = [{} for _ in range(self.parallel.vpp_size)]
        for name, value in state.items():
            chunk, local = self.names[name]
            out[chunk][local] = value
        return out

    def loaded_tensors(self, chunks: List[Dict[str, np.ndarray]], where: str) -> Dict[str, np.ndarray]:
        """The inverse of :meth:`saved_tensors`: the model's state from a checkpoint's chunks."""
        by_local = {self.names[n]: n for n in self.names}
        out = {}
        for chunk, tensors in enumerate(chunks):
            for local, value in tensors.items():
                if (chunk, local) not in by_local:
                    raise KeyError(f"{where}: tensor {local!r} of chunk {chunk} belongs to no parameter of pipeline "
                                   f"stage {self.pp_rank} (the checkpoint is split differently: resplit it with "
                                   "mm-convert, docs/convert.md)")
                out[by_local[(chunk, local)]] = value
        return out


__all__ = ["ChunkPlacement", "Dropped", "PipelineChunk", "PipelineError", "PipelineStage", "check_pipeline_model",
           "rank_chunks", "vision_is_split"]
