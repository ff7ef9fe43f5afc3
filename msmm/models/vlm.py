"""What every vision-language composition shares: the text decoders it can carry,
splicing vision features into the text embeddings with static shapes, and loading a
checkpoint whose keys need renaming (and, for fused tensors, splitting)."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Pattern, Sequence, Tuple

import numpy as np
import torch

from .checkpoint_io import KEY_MAPPINGS, checkpoint_files, map_key, read_safetensors_file
from .core import TransformerConfig
from .text import (
    CausalLM,
    InternLM2Decoder,
    LlamaDecoder,
    Qwen2Decoder,
    internlm2_config_from_hf,
    llama_config_from_hf,
    qwen2_config_from_hf,
)

IGNORED_KEYS = re.compile(r"rotary_emb\.inv_freq$")

# family -> (TransformerConfig from the HF text config dict, decoder class)
TEXT_DECODERS: Dict[str, Tuple[Callable[[Mapping[str, Any]], TransformerConfig], type]] = {
    "qwen2": (qwen2_config_from_hf, Qwen2Decoder),
    "llama": (llama_config_from_hf, LlamaDecoder),
    "internlm2": (internlm2_config_from_hf, InternLM2Decoder),
}
_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "InternLM2ForCausalLM": "internlm2"}


def text_family(text_config: Mapping[str, Any], where: str) -> str:
    """The decoder family of an HF text config dict, from ``model_type`` or ``architectures``."""
    family = text_config.get("model_type")
    if family not in TEXT_DECODERS:
        family = next((_ARCHITECTURES[a] for a in text_config.get("architectures") or () if a in _ARCHITECTURES), None)
    if family is None:
        raise ValueError(
            f"{where}: text model (model_type={text_config.get('model_type')!r}, "
            f"architectures={text_config.get('architectures')!r}) is not one of {sorted(TEXT_DECODERS)}"
        )
    return family


def build_text_decoder(family: str, config: TransformerConfig) -> CausalLM:
    return TEXT_DECODERS[family][1](config)


def splice_features(
    embeds: torch.Tensor,
    slots: torch.Tensor,
    features: torch.Tensor,
    tile_flags: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Put vision features at the image-token positions of the text embeddings.

    embeds [B, L, H]; slots bool [B, L], True at image tokens; features [N, T, H], T tokens
    for each of N tiles/images; tile_flags [N] (InternVL's ``image_flags``), 1 for a real
    tile, 0 for padding. The k-th slot in row-major order over the batch receives the k-th
    feature row of the real tiles, which is what dropping the padding tiles and then
    scattering in order (InternVL, HF ``masked_scatter``) gives. The data pipeline must
    provide exactly as many slots as real feature rows; with more, indexing goes out of
    range.

    Every shape here depends only on input shapes, never on values, so the function
    compiles in graph mode: the rank of each slot comes from a cumulative sum, and the
    tile that holds the rank-k real row from comparing k with the running count of real
    tiles.
    """
    b, l, h = embeds.shape
    n, t = features.shape[0], features.shape[1]
    slot = slots.reshape(b * l).to(torch.int64)
    rank = (torch.cumsum(slot, 0) - 1) * slot  # k for the k-th slot, 0 elsewhere
    if tile_flags is None:
        row = rank
    else:
        real_tile = torch.index_select(torch.arange(n).unsqueeze(1).expand(n, t).reshape(n * t), 0, rank)
        offset = torch.index_select(torch.arange(t).unsqueeze(0).expand(n, t).reshape(n * t), 0, rank)
        real_before = torch.cumsum(tile_flags.reshape(n).to(torch.int64), 0)  # real tiles up to each tile
        tile = (real_before.unsqueeze(0) <= real_tile.unsqueeze(1)).to(torch.int64).sum(-1)
        row = (tile * t + offset) * slot
    picked = torch.index_select(features.reshape(n * t, h).to(embeds.dtype), 0, row).view(b, l, h)
    return torch.where(slots.unsqueeze(-1), picked, embeds)


KeyRules = Sequence[Tuple[str, str]]
Renamer = Callable[[str], str]
Transform = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def prefix_renamer(groups: Sequence[Tuple[str, str, KeyRules]]) -> Renamer:
    """A key renamer from (old prefix, new prefix, rules for the rest of the key) groups: the
    first group whose prefix starts the key applies; keys of no group stay as they are.
    Scoping rules to a prefix keeps, e.g., text-model rules away from vision keys."""

    def rename(key: str) -> str:
        for old, new, rules in groups:
            if key.startswith(old):
                return new + map_key(key[len(old):], rules)
        return key

    return rename


def text_key_rules(family: str) -> KeyRules:
    """Rules from a text family's checkpoint names to ours, for keys below ``language_model.``."""
    return KEY_MAPPINGS.get(family, [])


def split_fused_qkv(tensors: Dict[str, np.ndarray], fused: str, parts: Sequence[str]) -> Dict[str, np.ndarray]:
    """Split every ``*.{fused}.weight|bias`` [3C, ...] into equal ``*.{part}.weight|bias`` chunks
    (e.g. InternViT's packed ``qkv`` into q_proj, k_proj, v_proj)."""
    out: Dict[str, np.ndarray] = {}
    pattern = re.compile(rf"^(.*)\.{re.escape(fused)}\.(weight|bias)$")
    for key, array in tensors.items():
        match = pattern.match(key)
        if match is None:
            out[key] = array
            continue
        if array.shape[0] % len(parts):
            raise ValueError(f"{key}: first dim {array.shape[0]} is not divisible into {len(parts)} parts")
        for part, chunk in zip(parts, np.split(array, len(parts), axis=0)):
            out[f"{match.group(1)}.{part}.{match.group(2)}"] = np.ascontiguousarray(chunk)
    return out


def read_mapped_checkpoint(
    path: str, rename: Renamer, transforms: Iterable[Transform] = ()
) -> Dict[str, Tuple[np.ndarray, str]]:
    """{our parameter name: (array, source file)}: keys renamed by ``rename``, then each
    file's tensors passed through ``transforms``."""
    tensors: Dict[str, Tuple[np.ndarray, str]] = {}
    for file in checkpoint_files(path):
        renamed: Dict[str, np.ndarray] = {}
        for key, array in read_safetensors_file(file).items():
            if IGNORED_KEYS.search(key):
                continue
            name = rename(key)
            if name in renamed:
                raise ValueError(f"{file}: key {key!r} maps to {name!r}, which another key of the file also maps to")
            renamed[name] = array
        for transform in transforms:
            renamed = transform(renamed)
        for name, array in renamed.items():
            if name in tensors:
                raise ValueError(f"{file}: {name!r} was already read from {tensors[name][1]}")
            tensors[name] = (array, file)
    return tensors


def load_mapped_checkpoint(
    model: torch.nn.Module,
    path: str,
    rename: Renamer,
    transforms: Iterable[Transform] = (),
    unused: Optional[Pattern[str]] = None,
    optional: Iterable[str] = (),
) -> None:
    """Load a safetensors checkpoint (file, or directory, single or sharded) into ``model``.

    Strict: every parameter must be found with its shape and every tensor used, except
    checkpoint tensors matching ``unused`` (parts of the model that are not built, such as
    ViT layers after the feature layer) and the parameters named in ``optional`` (a head
    tied to the embeddings).
    """
    tensors = read_mapped_checkpoint(path, rename, transforms)
    expected = model.state_dict()
    optional = set(optional)
    missing = [k for k in expected if k not in tensors and k not in optional]
    unexpected = [k for k in tensors if k not in expected and not (unused is not None and unused.search(k))]
    if missing or unexpected:
        raise KeyError(
            f"checkpoint {path} does not match the model: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    state = {}
    for name, (array, file) in tensors.items():
        if name not in expected:
            continue
        want = tuple(expected[name].shape)
        if tuple(array.shape) != want:
            raise ValueError(f"{file}: {name!r} has shape {tuple(array.shape)}, the model expects {want}")
        state[name] = torch.tensor(array, dtype=expected[name].dtype)
    model.load_state_dict(state, strict=False)
