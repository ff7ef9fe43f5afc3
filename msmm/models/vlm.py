"""What every vision-language composition shares: the text decoders it can carry,
splicing vision features into the text embeddings with static shapes, and the methods of a
vision tower + projector + ``language_model`` model (``VisionTowerLM``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

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

# family -> (TransformerConfig from the HF text config dict, decoder class)
TEXT_DECODERS: Dict[str, Tuple[Callable[[Mapping[str, Any]], TransformerConfig], type]] = {
    "qwen2": (qwen2_config_from_hf, Qwen2Decoder),
    "llama": (llama_config_from_hf, LlamaDecoder),
    "internlm2": (internlm2_config_from_hf, InternLM2Decoder),
}


def text_config_from_hf(family: str, text: Mapping[str, Any], where: str) -> TransformerConfig:
    """The TransformerConfig of a VLM config.json's text section ``text`` (read by ``family``'s
    reader); errors name ``where`` (the file and the section)."""
    try:
        return TEXT_DECODERS[family][0](text)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def build_text_decoder(family: str, config: TransformerConfig) -> CausalLM:
    return TEXT_DECODERS[family][1](config)


class VisionTowerLM(nn.Module):
    """A vision tower, a projector and a text decoder ``language_model`` (a ``CausalLM``) with
    one image token ``image_token_id`` (InternVL, LLaVA): the methods generation calls that
    such a model answers through its decoder. A subclass builds the three modules and defines
    ``get_image_features``, ``embed_inputs``, ``embedding_inputs`` and ``forward``."""

    @property
    def vision_token_ids(self) -> Tuple[int, ...]:
        """Ids whose embeddings ``embed_inputs`` replaces: the image token."""
        return (self.image_token_id,)

    def get_input_embeddings(self) -> nn.Embedding:
        """The text decoder's token embedding table."""
        return self.language_model.get_input_embeddings()

    def get_decoder(self) -> CausalLM:
        """The text decoder (a causal LM: ``forward_with_cache``, ``init_kv_cache``)."""
        return self.language_model

    def prompt_position_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray, **vision: Any) -> np.ndarray:
        """Position ids [B, L] of a left-padded prompt (the text decoder's)."""
        return self.language_model.prompt_position_ids(input_ids, attention_mask)


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
