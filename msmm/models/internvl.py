"""InternVL2 / 2.5 / 3: InternViT -> pixel shuffle + LN-MLP projector -> text decoder
(InternLM2, Qwen2/2.5 or Llama), image features spliced at the ``<IMG_CONTEXT>`` tokens.

Our parameter names are those of HF-native ``InternVLForConditionalGeneration``
checkpoints (``vision_tower.*``, ``multi_modal_projector.*``, ``language_model.model.*``,
``language_model.lm_head.*``). Checkpoints load in that layout or in the original OpenGVLab
remote-code one (``vision_model.*``, ``mlp1.*``, packed ``attn.qkv``): the renames of both are
the ``INTERNVL`` table of ``msmm.checkpoint.names``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Pattern, Tuple, Union

import numpy as np
import torch

from msmm.registry import TEXT_DECODER, VISION_ENCODER, VISION_PROJECTOR, text_family_of

from .core import TransformerConfig
from .model_config import ModelConfig, ModelConfigError, construct, text_config
from .projectors import PixelShuffleMLPConfig, PixelShuffleProjector
from .vision.intern_vit import InternVisionEncoder, intern_vit_config_from_hf
from .vision.vit import ViTConfig
from .vlm import TEXT_DECODERS, VisionTowerLM, build_text_decoder, splice_features, text_config_from_hf

IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"


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
    family = text_family_of(text, where)
    config = InternVLConfig(
        vision=intern_vit_config_from_hf(hf["vision_config"], feature_layer),
        text=text_config_from_hf(family, text, f"{where}: {'text_config' if layout == 'hf' else 'llm_config'}"),
        text_family=family,
        image_token_id=int(image_token_id),
        downsample_ratio=hf.get("downsample_ratio", 0.5),
        ps_version=ps_version,
    )
    return config, layout


class InternVL(VisionTowerLM):
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

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [N, 3, H, W] -> LLM inputs [N, tokens_per_tile, text_hidden]."""
        return self.project_vision(self.vision_tower(pixel_values))

    def project_vision(self, hidden: torch.Tensor) -> torch.Tensor:
        """The vision encoder's output [N, 1 + P, C] -> LLM inputs [N, tokens_per_tile, text_hidden]."""
        patches = torch.split(hidden, [1, hidden.shape[1] - 1], dim=1)[1]  # class token dropped
        return self.multi_modal_projector(patches)

    def embed_vision_hidden(
        self, input_ids: torch.Tensor, vision_hidden: torch.Tensor, image_flags: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``embed_inputs`` from the vision encoder's last layer output [N, 1 + P, C] (where a
        pipeline stage ends a vision encoder split over stages)."""
        features = self.project_vision(self.vision_tower.finish(vision_hidden))
        embeds = self.language_model.model.embed_tokens(input_ids)
        return splice_features(embeds, input_ids == self.image_token_id, features, image_flags)

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


def from_hf_config(hf: Mapping[str, Any], where: str = "config.json", image_token_id: Optional[int] = None) -> InternVL:
    """An InternVL (random weights) from a ``config.json`` dict of either layout."""
    config, _ = internvl_config_from_hf(hf, image_token_id, where)
    return InternVL(config)


def from_model_json(config: ModelConfig) -> InternVL:
    """An InternVL from a validated ``model.json`` (HF-native layout; Qwen2, InternLM2 or Llama text)."""
    where = f"{config.source}: image_encoder"
    vision = construct(ViTConfig, config.sections[VISION_ENCODER], f"{where}.vision_encoder")
    shuffle = construct(PixelShuffleMLPConfig, config.sections[VISION_PROJECTOR], f"{where}.vision_projector")
    if shuffle.ps_version not in ("v1", "v2"):
        raise ModelConfigError(f"{where}.vision_projector.ps_version: must be 'v1' or 'v2', got {shuffle.ps_version!r}")
    if (vision.grid_size * shuffle.downsample_ratio) % 1:
        raise ModelConfigError(f"{where}.vision_projector.downsample_ratio: {shuffle.downsample_ratio} does not divide "
                               f"the {vision.grid_size}x{vision.grid_size} patch grid evenly")
    return InternVL(InternVLConfig(vision=vision, text=text_config(config),
                                   text_family=config.sections[TEXT_DECODER].model_id,
                                   downsample_ratio=shuffle.downsample_ratio, ps_version=shuffle.ps_version,
                                   **config.options))


def unused_checkpoint_keys(config: InternVLConfig) -> Optional[Pattern[str]]:
    """MM names of checkpoint tensors of vision parts that are not built (layers after the
    feature layer, and then the final LayerNorm)."""
    vision = config.vision
    skipped = [rf"encoder\.layer\.{i}\." for i in range(vision.layers_used, vision.num_layers)]
    if vision.final_layernorm and vision.layers_used < vision.num_layers:
        skipped.append(r"layernorm\.")
    return re.compile(r"^vision_tower\.(" + "|".join(skipped) + ")") if skipped else None
