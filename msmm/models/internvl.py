"""InternVL2 / 2.5 / 3: InternViT -> pixel shuffle + LN-MLP projector -> text decoder
(InternLM2, Qwen2/2.5 or Llama), image features spliced at the ``<IMG_CONTEXT>`` tokens.

Our parameter names are those of HF-native ``InternVLForConditionalGeneration``
checkpoints (``vision_tower.*``, ``multi_modal_projector.*``, ``language_model.model.*``,
``language_model.lm_head.*``). Two checkpoint layouts load:

* ``"hf"``: the HF-native files, as saved (names unchanged) or in the in-memory names of
  transformers >= 4.52 (``model.vision_tower.*`` -> ``vision_tower.*``,
  ``model.multi_modal_projector.*`` -> ``multi_modal_projector.*``,
  ``model.language_model.*`` -> ``language_model.model.*``, ``lm_head.*`` ->
  ``language_model.lm_head.*``).
* ``"remote"``: the original OpenGVLab remote-code files. ``vision_model.`` -> ``vision_tower.``
  and below it ``embeddings.class_embedding`` -> ``embeddings.cls_token``,
  ``embeddings.patch_embedding`` -> ``embeddings.patch_embeddings.projection``,
  ``embeddings.position_embedding`` -> ``embeddings.position_embeddings``,
  ``encoder.layers`` -> ``encoder.layer``, ``attn.proj`` -> ``attention.projection_layer``,
  ``attn`` -> ``attention`` (q_norm, k_norm), ``norm1``/``norm2`` ->
  ``layernorm_before``/``layernorm_after``, ``ls1``/``ls2`` -> ``lambda_1``/``lambda_2``, and
  the packed ``attn.qkv`` [3C, C] is split into ``q_proj``, ``k_proj``, ``v_proj`` in that
  order; ``mlp1.0``/``mlp1.1``/``mlp1.3`` -> ``multi_modal_projector.layer_norm``/``linear_1``/
  ``linear_2``; ``language_model.*`` keeps its prefix and, for InternLM2, takes the
  InternLM2 renames of ``checkpoint_io`` below it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Pattern, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .core import TransformerConfig
from .projectors import PixelShuffleProjector
from .text import CausalLM
from .vision.intern_vit import InternVisionEncoder, intern_vit_config_from_hf
from .vision.vit import ViTConfig
from .vlm import (
    TEXT_DECODERS,
    build_text_decoder,
    load_mapped_checkpoint,
    prefix_renamer,
    splice_features,
    split_fused_qkv,
    text_family,
    text_key_rules,
)

IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
LAYOUTS = ("hf", "remote")

_REMOTE_VISION_RULES = [
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"^encoder\.layers\.", "encoder.layer."),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.ls1$", ".lambda_1"),
    (r"\.ls2$", ".lambda_2"),
]
_REMOTE_PROJECTOR_RULES = [(r"^0\.", "layer_norm."), (r"^1\.", "linear_1."), (r"^3\.", "linear_2.")]


@dataclass
class InternVLConfig:
    vision: ViTConfig
    text: TransformerConfig
    text_family: str  # "internlm2", "qwen2" or "llama"
    image_token_id: int  # id of <IMG_CONTEXT>
    downsample_ratio: float = 0.5
    ps_version: str = "v2"

    def __post_init__(self) -> None:
        if self.text_family not in TEXT_DECODERS:
            raise ValueError(f"text_family must be one of {sorted(TEXT_DECODERS)}, got {self.text_family!r}")

    @property
    def tokens_per_tile(self) -> int:
        return int(self.vision.grid_size * self.downsample_ratio) ** 2


def internvl_config_from_hf(
    hf: Mapping[str, Any], image_token_id: Optional[int] = None, where: str = "config.json"
) -> Tuple[InternVLConfig, str]:
    """(InternVLConfig, checkpoint layout) from an InternVL ``config.json`` dict.

    HF-native configs carry ``text_config`` and ``image_token_id``; remote-code configs
    carry ``llm_config``, ``select_layer`` and ``ps_version``, and no token id: pass the id
    of ``<IMG_CONTEXT>`` from the tokenizer as ``image_token_id``.
    """
    if "text_config" in hf:
        layout, text = "hf", hf["text_config"]
        strategy = hf.get("vision_feature_select_strategy", "default")
        if strategy != "default":
            raise ValueError(f"{where}: vision_feature_select_strategy={strategy!r}; InternVL needs 'default'")
        if hf.get("projector_hidden_act", "gelu") != "gelu":
            raise ValueError(f"{where}: projector_hidden_act={hf['projector_hidden_act']!r}; only 'gelu'")
        feature_layer, ps_version = hf.get("vision_feature_layer", -1), "v2"
        if image_token_id is None:
            image_token_id = hf.get("image_token_id")
    elif "llm_config" in hf:
        layout, text = "remote", hf["llm_config"]
        feature_layer, ps_version = hf.get("select_layer", -1), hf.get("ps_version", "v1")
    else:
        raise ValueError(f"{where}: an InternVL config needs 'text_config' (HF-native) or 'llm_config' (remote code)")
    if image_token_id is None:
        raise ValueError(f"{where}: no image_token_id; pass the id of {IMG_CONTEXT_TOKEN} from the tokenizer")
    if "vision_config" not in hf:
        raise ValueError(f"{where}: missing 'vision_config'")
    if not isinstance(feature_layer, int):
        raise ValueError(f"{where}: vision feature layer {feature_layer!r}: only a single layer is supported")
    family = text_family(text, where)
    config = InternVLConfig(
        vision=intern_vit_config_from_hf(hf["vision_config"], feature_layer),
        text=TEXT_DECODERS[family][0](text),
        text_family=family,
        image_token_id=int(image_token_id),
        downsample_ratio=hf.get("downsample_ratio", 0.5),
        ps_version=ps_version,
    )
    return config, layout


class InternVL(nn.Module):
    """InternVL chat model: tiles [N, 3, H, W] and token ids -> logits (and loss)."""

    def __init__(self, config: InternVLConfig) -> None:
        super().__init__()
        self.config = config
        self.image_token_id = config.image_token_id
        self.vision_tower = InternVisionEncoder(config.vision)
        self.multi_modal_projector = PixelShuffleProjector(
            config.vision.hidden_size,
            config.text.hidden_size,
            config.downsample_ratio,
            config.ps_version,
            init_method_std=config.text.init_method_std,
        )
        self.language_model = build_text_decoder(config.text_family, config.text)

    @property
    def vision_token_ids(self) -> Tuple[int, ...]:
        """Ids whose embeddings ``embed_inputs`` replaces: <IMG_CONTEXT>."""
        return (self.image_token_id,)

    def get_input_embeddings(self) -> nn.Embedding:
        """The text decoder's token embedding table."""
        return self.language_model.get_input_embeddings()

    def get_decoder(self) -> CausalLM:
        """The text decoder (a causal LM: ``forward_with_cache``, ``init_kv_cache``)."""
        return self.language_model

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [N, 3, H, W] -> LLM inputs [N, tokens_per_tile, text_hidden]."""
        hidden = self.vision_tower(pixel_values)  # [N, 1 + P, C]
        patches = torch.split(hidden, [1, hidden.shape[1] - 1], dim=1)[1]  # class token dropped
        return self.multi_modal_projector(patches)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        image_flags: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Token embeddings [B, L, hidden] with the features of the real tiles (``image_flags``
        1, or all without flags) at the <IMG_CONTEXT> tokens, in order."""
        embeds = self.language_model.model.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        features = self.get_image_features(pixel_values)
        return splice_features(embeds, input_ids == self.image_token_id, features, image_flags)

    def embedding_inputs(self, pixel_values=None, image_flags=None, **unused: Any) -> Dict[str, np.ndarray]:
        """The keyword inputs of ``embed_inputs`` besides ``input_ids`` (numpy), from the data
        pipeline's vision inputs."""
        inputs = {"pixel_values": pixel_values, "image_flags": image_flags}
        return {k: np.asarray(v) for k, v in inputs.items() if v is not None}

    def prompt_position_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray, **vision: Any) -> np.ndarray:
        """Position ids [B, L] of a left-padded prompt (the text decoder's)."""
        return self.language_model.prompt_position_ids(input_ids, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        image_flags: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """input_ids [B, L] with ``tokens_per_tile`` <IMG_CONTEXT> ids per real tile;
        pixel_values [N, 3, H, W], the tiles of the whole batch in order; image_flags [N]
        (1 real tile, 0 padding tile that is skipped); attention_mask [B, L] (1 token,
        0 padding); labels [B, L] with -100 where no loss is taken; segment_ids [B, L] for
        packed rows (tokens attend within their segment; position_ids restart at each).
        Returns logits [B, L, V], or (loss, logits) with labels."""
        embeds = self.embed_inputs(input_ids, pixel_values, image_flags)
        return self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
            labels=labels,
        )


def _unused_keys(config: InternVLConfig) -> Optional[Pattern[str]]:
    """Checkpoint keys of vision parts that are not built (layers after the feature layer)."""
    vision = config.vision
    skipped = [rf"encoder\.layer\.{i}\." for i in range(vision.layers_used, vision.num_layers)]
    if vision.final_layernorm and vision.layers_used < vision.num_layers:
        skipped.append(r"layernorm\.")
    return re.compile(r"^vision_tower\.(" + "|".join(skipped) + ")") if skipped else None


def load_internvl_checkpoint(model: InternVL, path: str, layout: str = "hf") -> None:
    """Load safetensors (a file, or a directory with one file or an index of shards) in the
    given ``layout`` ("hf" or "remote", see the module docstring) into ``model``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    config = model.config
    text_rules = text_key_rules(config.text_family)
    transforms = ()
    if layout == "hf":
        rename = prefix_renamer(
            [
                ("model.language_model.", "language_model.model.", []),
                ("model.vision_tower.", "vision_tower.", []),
                ("model.multi_modal_projector.", "multi_modal_projector.", []),
                ("lm_head.", "language_model.lm_head.", []),
                ("language_model.", "language_model.", text_rules),
            ]
        )
    else:
        rename = prefix_renamer(
            [
                ("vision_model.", "vision_tower.", _REMOTE_VISION_RULES),
                ("mlp1.", "multi_modal_projector.", _REMOTE_PROJECTOR_RULES),
                ("language_model.", "language_model.", text_rules),
            ]
        )
        transforms = (lambda tensors: split_fused_qkv(tensors, "qkv", ("q_proj", "k_proj", "v_proj")),)
    optional = ["language_model.lm_head.weight"] if config.text.tie_word_embeddings else []
    load_mapped_checkpoint(model, path, rename, transforms, _unused_keys(config), optional)


def load_internvl(path: str, image_token_id: Optional[int] = None) -> InternVL:
    """Build an InternVL from a checkpoint directory (``config.json`` + safetensors, either
    layout) and load its weights."""
    config_file = os.path.join(path, "config.json")
    with open(config_file) as f:
        config, layout = internvl_config_from_hf(json.load(f), image_token_id, config_file)
    model = InternVL(config)
    load_internvl_checkpoint(model, path, layout)
    return model
