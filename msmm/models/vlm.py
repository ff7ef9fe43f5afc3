"""What every vision-language composition shares: the text decoders it can carry, and
splicing vision features into the text embeddings with static shapes."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

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
