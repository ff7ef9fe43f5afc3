"""``ckpt_path`` of a model.json section: that section's weights from its own checkpoint.

LLaVA-1.5 stage 1 as MindSpeed-MM runs it: the CLIP ViT from OpenAI's ``ViT-L-14-336px.pt`` (or
an HF CLIP directory), the text decoder from an HF Vicuna directory, the projector freshly
initialised (no ``ckpt_path``). Which sections read a checkpoint, and in what form:

* ``text_decoder`` (every family): an HF causal-LM checkpoint of the section's text family
  (a directory, or one weights file). Vocabulary rows the model has beyond the checkpoint's
  (tokens added for images, such as LLaVA's ``<image>``) start at the mean of its rows, as HF's
  LLaVA conversion does; this is logged.
* ``image_encoder.vision_encoder`` ``clip_vit``: an HF CLIP checkpoint or OpenAI's CLIP ``.pt``.
* ``image_encoder.vision_projector`` ``mlp``: LLaVA's ``mm_projector.bin`` or MindSpeed-MM's
  converted ``mlp.pt`` (``encoder.linear_fc1/2``).

Every parameter of the section must be in the file (shapes equal); the text and vision numbers
of a directory's ``config.json`` must equal model.json's. Other sections' ``ckpt_path`` are
refused (their weights come with ``--load``).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping

import numpy as np
import torch.nn as nn

from msmm.checkpoint.hf import load_config, read_hf_tensors, read_weights_file
from msmm.checkpoint.names import LLAVA, TEXT_NAMINGS, clip_to_llava, projector_to_llava
from msmm.checkpoint.safetensors import Tensor
from msmm.registry import TEXT_DECODER, VISION_ENCODER, VISION_PROJECTOR, get_family

from .model_config import ModelConfig, ModelConfigError
from .pretrained import _tied_names, _unused, check_text_decoder, check_vision_encoder, load_tensors

# vocabulary tables a text checkpoint may have fewer rows of than the model
VOCAB_TABLES = ("embed_tokens.weight", "lm_head.weight")


def _read(path: str) -> Dict[str, Tensor]:
    return read_hf_tensors(path) if os.path.isdir(path) else read_weights_file(path)


def _llava_names(convert: Callable[[Mapping[str, Tensor], str], Dict[str, Tensor]]):
    def read(path: str, config: ModelConfig) -> Dict[str, Tensor]:
        return LLAVA.to_mm(convert(_read(path), path), "hf")
    return read


def _text(path: str, config: ModelConfig) -> Dict[str, Tensor]:
    section = config.sections[TEXT_DECODER]
    prefix = get_family(config.model_id).naming.text_group or ""
    tensors = TEXT_NAMINGS[section.model_id].to_mm(_read(path), "hf")
    return {prefix + name: t for name, t in tensors.items()}


# (section, section model_id or None for any) -> reader of the file's tensors in the model's names
READERS = {
    (TEXT_DECODER, None): _text,
    (VISION_ENCODER, "clip_vit"): _llava_names(clip_to_llava),
    (VISION_PROJECTOR, "mlp"): _llava_names(projector_to_llava),
}


def _grown(t: Tensor, rows: int) -> Tensor:
    """``t`` with rows appended up to ``rows``, each the mean of its rows."""
    def load() -> np.ndarray:
        values = t.numpy()
        return np.concatenate([values, np.repeat(values.mean(0, keepdims=True), rows - values.shape[0], 0)])

    return Tensor("F32", (rows,) + tuple(t.shape[1:]), load, t.source)


def _check_config(config: ModelConfig, path: str, section: str) -> None:
    """A directory's config.json numbers against model.json's section (the vocabulary may grow:
    its rows are checked on loading)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        return
    hf, where = load_config(path), os.path.join(path, "config.json")
    if section == TEXT_DECODER:
        check_text_decoder(config, {k: v for k, v in hf.items() if k != "vocab_size"}, where)
    elif section == VISION_ENCODER:
        check_vision_encoder(config, {"vision_config": hf.get("vision_config", hf)}, where)


def load_section_weights(model: nn.Module, config: ModelConfig) -> List[str]:
    """Load every section's ``ckpt_path`` into ``model`` (built from ``config``); returns the
    lines to log (what was loaded, vocabulary rows added)."""
    spec, expected = get_family(config.model_id), None
    notes = []
    for path, section in config.sections.items():
        if section.ckpt_path is None:
            continue
        where = f"{config.source}: {path}.ckpt_path"
        read = READERS.get((path, section.model_id), READERS.get((path, None)))
        if read is None:
            raise ModelConfigError(f"{where}: a {section.model_id!r} section does not read its own checkpoint "
                                   "(text_decoder, clip_vit and mlp sections do); load it with --load")
        if not os.path.exists(section.ckpt_path):
            raise ModelConfigError(f"{where}: {section.ckpt_path}: no such file or directory")
        try:
            tensors = read(section.ckpt_path, config)
        except KeyError as err:
            raise ModelConfigError(f"{where}: {err.args[0]} (give the original weights: OpenAI's CLIP .pt or an HF "
                                   "directory; MindSpeed-MM's converted_clip.pt / converted_vicuna.pt, in Megatron's "
                                   "names, are not read)") from err
        except ValueError as err:
            raise ModelConfigError(f"{where}: {err}") from err
        _check_config(config, section.ckpt_path, path)
        expected = expected or {k: tuple(v.shape) for k, v in model.state_dict().items()}
        prefixes = tuple(f"{p}." for p in spec.freeze[path])
        rows = section.config.get("vocab_size", 0)  # the whole vocabulary (a TP rank's rows are cut from it)
        for name, t in list(tensors.items()):
            if name.endswith(VOCAB_TABLES) and name.startswith(prefixes) and t.shape[0] < rows:
                notes.append(f"{where}: {name} has {t.shape[0]} rows, the model {rows}: rows {t.shape[0]}..{rows - 1} "
                             "(tokens added for images) start at the mean of the checkpoint's rows")
                tensors[name] = _grown(t, rows)
        owned = [n for n in expected if n.startswith(prefixes)]
        missing = [n for n in owned if n not in tensors and n not in _tied_names(model)]
        if missing:
            raise ModelConfigError(f"{where}: {section.ckpt_path} lacks {len(missing)} of the section's parameters "
                                   f"({missing[:5]}{' ...' if len(missing) > 5 else ''})")
        load_tensors(model, tensors, section.ckpt_path, _unused(model, spec), require_all=False)
        notes.append(f"{path}: {len(owned)} tensors from {section.ckpt_path}")
    return notes
