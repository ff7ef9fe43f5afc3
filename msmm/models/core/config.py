"""The transformer configuration object shared by every decoder and encoder stack."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .rope_scaling import RopeScaling, parse_rope_scaling


@dataclass
class TransformerConfig:
    """Architecture of one transformer stack, in Megatron's vocabulary.

    HF names in brackets: num_layers [num_hidden_layers], num_query_groups
    [num_key_value_heads], ffn_hidden_size [intermediate_size], kv_channels [head_dim],
    layernorm_epsilon [rms_norm_eps], rotary_base [rope_theta]; rope_scaling and
    max_position_embeddings as HF's (``rope_scaling`` without M-RoPE's ``mrope_section``).
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int
    num_query_groups: Optional[int] = None  # GQA key/value heads; None = num_attention_heads
    kv_channels: Optional[int] = None  # head dim; None = hidden_size // num_attention_heads
    vocab_size: int = 0
    layernorm_epsilon: float = 1e-6
    add_qkv_bias: bool = False
    add_bias_linear: bool = False  # bias on the attention output and the MLP projections
    rotary_base: float = 10000.0
    mrope_section: Optional[Tuple[int, ...]] = None  # M-RoPE (t, h, w) split of head_dim / 2
    rope_scaling: Optional[Dict[str, Any]] = None  # HF rope_scaling: linear, dynamic or yarn
    max_position_embeddings: Optional[int] = None  # the context dynamic / yarn scaling is relative to
    tie_word_embeddings: bool = False
    pad_token_id: Optional[int] = None
    init_method_std: float = 0.02
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    # Megatron's sequence parallelism: hidden states split along the sequence over the
    # tensor-parallel ranks outside attention and MLP. A run setting (msmm-train
    # --sequence-parallel), which the text decoder takes from the tensor-parallel state.
    sequence_parallel: bool = False

    def rope(self) -> Optional[RopeScaling]:
        """The parsed ``rope_scaling`` (None: plain RoPE)."""
        return parse_rope_scaling(self.rope_scaling, self.max_position_embeddings)

    def __post_init__(self) -> None:
        self.rope()  # a bad rope_scaling is an error here, not at the first forward
        if self.num_query_groups is None:
            self.num_query_groups = self.num_attention_heads
        if self.kv_channels is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_attention_heads ({self.num_attention_heads}); set kv_channels"
                )
            self.kv_channels = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_query_groups ({self.num_query_groups})"
            )
        if self.mrope_section is not None:
            self.mrope_section = tuple(self.mrope_section)
            if 2 * sum(self.mrope_section) != self.kv_channels:
                raise ValueError(
                    f"mrope_section {self.mrope_section} must sum to kv_channels / 2 "
                    f"({self.kv_channels // 2})"
                )
