"""OpenAI CLIP checkpoints (``ViT-L-14-336px.pt``, read by ``torch_pickle``) in HF CLIP's names.

OpenAI's vision tower is ``visual.*`` (``conv1``, ``class_embedding``, ``positional_embedding``,
``ln_pre``, ``transformer.resblocks.N.{attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2}``, ``ln_post``,
``proj``) with q, k and v packed in ``attn.in_proj_weight`` / ``in_proj_bias``; HF's
``CLIPVisionModel`` keeps them apart under ``vision_model.*``. The text side and the output
projection ``visual.proj`` (not used by LLaVA, which reads a hidden layer) are dropped.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping

from .safetensors import Tensor

_TOP = {"conv1.weight": "embeddings.patch_embedding.weight", "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight", "ln_pre.weight": "pre_layrnorm.weight",
        "ln_pre.bias": "pre_layrnorm.bias", "ln_post.weight": "post_layernorm.weight",
        "ln_post.bias": "post_layernorm.bias"}
_LAYER = {"attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "mlp.c_fc.": "mlp.fc1.",
          "mlp.c_proj.": "mlp.fc2.", "ln_2.": "layer_norm2."}
_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_PACKED = re.compile(r"^attn\.in_proj_(weight|bias)$")
_DROPPED = ("proj",)


def is_openai_clip(tensors: Mapping[str, Tensor]) -> bool:
    return any(key.startswith("visual.") for key in tensors)


def _chunk(t: Tensor, index: int) -> Tensor:
    rows = t.shape[0] // 3
    return Tensor(t.dtype, (rows,) + t.shape[1:], lambda: t.load()[index * rows:(index + 1) * rows],
                  f"{t.source}[{index * rows}:{(index + 1) * rows}]")


def openai_clip_to_hf(tensors: Mapping[str, Tensor], path: str) -> Dict[str, Tensor]:
    """HF ``vision_model.*`` tensors of an OpenAI CLIP checkpoint; an unknown ``visual.*`` key
    is an error naming ``path``."""
    out: Dict[str, Tensor] = {}
    for key, t in tensors.items():
        if not key.startswith("visual."):
            continue  # the text tower
        name = key[len("visual."):]
        if name in _DROPPED:
            continue
        if name in _TOP:
            out[f"vision_model.{_TOP[name]}"] = t
            continue
        block = _BLOCK.match(name)
        packed = _PACKED.match(block.group(2)) if block else None
        rest = block.group(2) if block else ""
        prefix = f"vision_model.encoder.layers.{block.group(1)}." if block else ""
        if packed is not None:
            if t.shape[0] % 3:
                raise ValueError(f"{path}: {key} has {t.shape[0]} rows, not q, k and v of equal size")
            for index, part in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{prefix}self_attn.{part}.{packed.group(1)}"] = _chunk(t, index)
            continue
        fragment = next((f for f in _LAYER if rest.startswith(f)), None) if block else None
        if fragment is None:
            raise KeyError(f"{path}: unexpected key {key!r} in an OpenAI CLIP checkpoint")
        out[prefix + _LAYER[fragment] + rest[len(fragment):]] = t
    if not out:
        raise KeyError(f"{path}: no visual.* tensors: not an OpenAI CLIP checkpoint")
    return out
