"""Decoder-only language model (embeddings + transformer block) and the causal-LM head/loss."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import (
    ColumnParallelLinear,
    ModuleSpec,
    RotaryEmbedding,
    TransformerBlock,
    TransformerConfig,
    cached_attention_mask,
    causal_attention_mask,
)
from ..core.context_parallel import context_attention_mask, context_parallel_size, select_local
from ..core.rope_scaling import PLAIN
from ..core.tensor_parallel import (VocabParallelEmbedding, padded_vocab_size, scatter_to_sequence_parallel_region,
                                    sequence_parallel_enabled)

IGNORE_INDEX = -100

# TransformerConfig field -> the key of an HF causal-LM config.json (Qwen2, Llama, InternLM2) that holds it
HF_TEXT_KEYS = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
                "num_attention_heads": "num_attention_heads", "num_query_groups": "num_key_value_heads",
                "ffn_hidden_size": "intermediate_size", "vocab_size": "vocab_size",
                "layernorm_epsilon": "rms_norm_eps", "rotary_base": "rope_theta"}


def hf_rope_scaling(hf: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """``rope_scaling`` of an HF config.json without M-RoPE's ``mrope_section`` (which is
    TransformerConfig.mrope_section); None when nothing else is left."""
    raw = hf.get("rope_scaling")
    if not isinstance(raw, Mapping):
        return raw
    rest = {k: v for k, v in raw.items() if k != "mrope_section"}
    plain = set(rest) <= {"type", "rope_type"} and rest.get("rope_type", rest.get("type")) in PLAIN + (None,)
    return None if plain else rest


def hf_text_fields(hf: Mapping[str, Any]) -> Dict[str, Any]:
    """The TransformerConfig fields every HF causal-LM config.json msmm reads spells alike
    (a family's ``*_config_from_hf`` adds its own)."""
    heads = hf["num_attention_heads"]
    return dict(num_layers=hf["num_hidden_layers"], hidden_size=hf["hidden_size"], num_attention_heads=heads,
                num_query_groups=hf.get("num_key_value_heads") or heads, ffn_hidden_size=hf["intermediate_size"],
                vocab_size=hf["vocab_size"], layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
                rotary_base=hf.get("rope_theta", 10000.0), tie_word_embeddings=hf.get("tie_word_embeddings", False),
                pad_token_id=hf.get("pad_token_id"), init_method_std=hf.get("initializer_range", 0.02),
                rope_scaling=hf_rope_scaling(hf), max_position_embeddings=hf.get("max_position_embeddings"))


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross entropy: position t predicts labels[t + 1]; ``ignore_index`` labels
    (prompt, padding, image tokens) and the last position do not count.

    logits [B, L, V], labels [B, L]. ``reduction`` "mean" averages over counted tokens,
    "sum" returns their total (for a trainer that normalizes across micro-batches).
    """
    if context_parallel_size() > 1:  # a rank's logits cover its tokens: the shift needs the whole sequence
        raise ValueError("causal_lm_loss under context parallelism: a rank holds part of each sequence; the loss "
                         "is msmm-train's (labels shifted before the split)")
    vocab = logits.shape[-1]
    shifted = torch.narrow(F.pad(labels, (0, 1), value=ignore_index), 1, 1, labels.shape[1])
    return F.cross_entropy(
        logits.float().reshape(-1, vocab), shifted.reshape(-1), ignore_index=ignore_index, reduction=reduction
    )


class DecoderModel(TransformerBlock):
    """Token embeddings -> layers -> final norm. Names follow HF's ``model.*`` keys:
    embed_tokens, layers.N.*, norm. With ``config.sequence_parallel`` the input embeddings
    (vision features spliced in) are scattered along the sequence and the layers and the norm
    run on this tensor-parallel rank's L / TP tokens (rotary tables and the attention mask
    cover the whole sequence: attention sees all of it)."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec) -> None:
        super().__init__(config, layer_spec)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, config.pad_token_id,
                                                   config.init_method_std)
        self.rotary_emb = RotaryEmbedding(config.kv_channels, config.rotary_base, config.mrope_section, config.rope())
        self.uses_mrope = config.mrope_section is not None
        self.sequence_parallel = config.sequence_parallel

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        caches: Optional[Tuple] = None,
        slots: Optional[torch.Tensor] = None,
    ):
        """Returns the final hidden states [B, L, hidden].

        input_ids [B, L] or inputs_embeds [B, L, hidden]; position_ids [B, L] (or [3, B, L]
        for M-RoPE), default 0..L-1; attention_mask [B, L] with 1 for tokens, 0 for padding;
        segment_ids [B, L] for packed sequences (tokens attend within their segment; pass
        position_ids that restart at each segment).

        Incremental decoding: ``caches`` holds one (keys, values) pair [B, G, Lmax, D] per
        layer and ``slots`` [L, Lmax] (one-hot) the cache positions of the L new tokens;
        ``attention_mask`` then covers the whole cache [B, Lmax]. Returns (hidden, caches).
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if caches is not None:
            rotary = self.rotary_emb(self.full_position_ids(inputs_embeds, position_ids))
            return super().forward(inputs_embeds, rotary, cached_attention_mask(slots, attention_mask), caches, slots)
        layer_inputs = self.layer_inputs(inputs_embeds, position_ids, attention_mask, segment_ids)
        if self.sequence_parallel:
            inputs_embeds = scatter_to_sequence_parallel_region(inputs_embeds)
        inputs_embeds = select_local(inputs_embeds, 1)  # context parallelism: this rank's tokens
        return super().forward(inputs_embeds, *layer_inputs)

    def full_position_ids(self, hidden: torch.Tensor, position_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """position_ids as the rotary embedding takes them: 0..L-1 by default, [3, B, L] for M-RoPE."""
        b, l = hidden.shape[0], hidden.shape[1]
        if position_ids is None:
            position_ids = torch.arange(l).unsqueeze(0).expand(b, l)
        if self.uses_mrope and len(position_ids.shape) == 2:
            position_ids = position_ids.unsqueeze(0).expand(3, b, l)
        return position_ids

    def layer_inputs(
        self,
        hidden: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
    ) -> Tuple[Tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """(rotary (cos, sin), attention mask): what every layer takes besides the hidden states
        [B, L, hidden] (a pipeline stage computes them for its own layers). With context
        parallelism: the rotary tables of this rank's tokens and the mask of its queries over
        every rank's keys (``hidden`` still the whole sequence)."""
        position_ids = self.full_position_ids(hidden, position_ids)
        if context_parallel_size() > 1:
            return (self.rotary_emb(select_local(position_ids, -1)),
                    context_attention_mask(hidden.shape[1], attention_mask, segment_ids))
        return self.rotary_emb(position_ids), causal_attention_mask(hidden.shape[1], attention_mask, segment_ids)


class CausalLM(nn.Module):
    """``model`` (DecoderModel) + ``lm_head``; ties the head to the embeddings if configured.

    ``tied_weights`` maps each tied parameter name to the name it shares storage with, so
    a checkpoint may omit it (HF saves tied weights once).

    Built while sequence parallelism is on (msmm-train --sequence-parallel, with tensor
    parallelism) it runs sequence parallel (``config.sequence_parallel``); the output layer
    gathers the sequence, so the logits cover all of it.
    """

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec) -> None:
        super().__init__()
        config = replace(config, sequence_parallel=sequence_parallel_enabled())
        self.config = config
        self.model = DecoderModel(config, layer_spec)
        # vocab-parallel logits: a rank computes those of its (padded) vocabulary rows
        self.lm_head = ColumnParallelLinear(config.hidden_size, config.vocab_size, False, config.init_method_std,
                                            padded_out=padded_vocab_size(config.vocab_size),
                                            sequence_parallel=config.sequence_parallel)
        self.tied_weights = {}
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
            self.tied_weights = {"lm_head.weight": "model.embed_tokens.weight"}

    vision_token_ids: Tuple[int, ...] = ()  # ids whose embeddings ``embed_inputs`` replaces: none

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table."""
        return self.model.embed_tokens

    def vocab_partition(self) -> Tuple[int, int]:
        """(the output layer's vocabulary rows on this tensor-parallel rank, the real
        vocabulary size): the logits a rank computes, and which of all ranks' are padding."""
        return self.lm_head.weight.shape[0], self.model.embed_tokens.vocab_size

    def get_decoder(self) -> "CausalLM":
        """The causal LM that decodes (itself): ``forward_with_cache`` and ``init_kv_cache``."""
        return self

    def embed_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> the decoder's input embeddings [B, L, hidden]."""
        return self.model.embed_tokens(input_ids)

    def embedding_inputs(self, **vision: Any) -> Dict[str, np.ndarray]:
        """The keyword inputs of ``embed_inputs`` besides ``input_ids``, from the data
        pipeline's vision inputs (numpy): none for a text model."""
        return {}

    def prompt_position_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray, **vision: Any) -> np.ndarray:
        """Position ids [B, L] of a left-padded prompt (HF: the first real token is 0, padding 0)."""
        return np.maximum(np.cumsum(attention_mask, -1) - 1, 0).astype(np.int64)

    def init_kv_cache(self, batch_size: int, max_length: int, dtype: Any) -> Tuple[Tuple[torch.Tensor, torch.Tensor], ...]:
        """Zero (keys, values) [B, G, max_length, D] per layer for ``forward_with_cache``."""
        attention = self.model.layers[0].self_attn
        shape = (batch_size, attention.num_groups, max_length, attention.head_dim)
        return tuple((torch.zeros(*shape, dtype=dtype), torch.zeros(*shape, dtype=dtype)) for _ in self.model.layers)

    def forward_with_cache(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        kv_cache: Tuple[Tuple[torch.Tensor, torch.Tensor], ...],
        slots: torch.Tensor,
        logits_index: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Tuple[Tuple[torch.Tensor, torch.Tensor], ...]]:
        """Incremental decoding: L new tokens through the decoder over the KV cache.

        inputs_embeds [B, L, hidden]; position_ids [B, L] (or [3, B, L] for M-RoPE);
        attention_mask [B, Lmax] over the whole cache; kv_cache as from ``init_kv_cache``;
        slots [L, Lmax] one-hot, the cache positions of the new tokens. Returns (logits
        [B, V] float32 of the last new token, or of the token at ``logits_index`` [1],
        updated kv_cache).
        """
        hidden, kv_cache = self.model(
            inputs_embeds=inputs_embeds, position_ids=position_ids, attention_mask=attention_mask,
            caches=kv_cache, slots=slots,
        )
        if logits_index is not None:
            hidden = torch.index_select(hidden, 1, logits_index)
        return self.lm_head(hidden).float()[:, -1], kv_cache

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """logits [B, L, V]; with ``labels`` [B, L] returns (loss, logits)."""
        hidden = self.model(input_ids, inputs_embeds, position_ids, attention_mask, segment_ids)
        logits = self.lm_head(hidden)
        if labels is None:
            return logits
        return causal_lm_loss(logits, labels), logits
