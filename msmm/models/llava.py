"""LLaVA-1.5: CLIP ViT (penultimate layer, class token dropped) -> 2-layer GELU MLP ->
Llama/Vicuna, image features spliced at the ``<image>`` tokens.

Our parameter names are those of HF ``LlavaForConditionalGeneration`` checkpoints with the
CLIP wrapper level removed: ``vision_tower.vision_model.*`` -> ``vision_tower.*``;
``multi_modal_projector.*`` and ``language_model.model.*`` / ``language_model.lm_head.*``
are unchanged (the ``LLAVA`` table of ``msmm.checkpoint.names``, which also reads the
in-memory names of transformers >= 4.52). CLIP's ``post_layernorm`` and the layers after the
feature layer are not built; their checkpoint tensors are skipped (``unused_checkpoint_keys``).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Pattern, Tuple, Union

import numpy as np
import torch

from msmm.registry import TEXT_DECODER, VISION_ENCODER, VISION_PROJECTOR, text_family_of

from .core import TransformerConfig
from .model_config import ModelConfig, ModelConfigError, construct, text_config
from .projectors import MLPProjector, MLPProjectorConfig
from .vision.clip_vit import CLIPViTConfig, CLIPVisionEncoder, clip_vit_config_from_hf
from .vision.vit import ViTConfig
from .vlm import TEXT_DECODERS, VisionTowerLM, build_text_decoder, splice_features, text_config_from_hf

IMAGE_TOKEN = "<image>"
SELECT_STRATEGIES = ("default", "full")


@dataclass
class LlavaConfig:
    vision: ViTConfig
    text: TransformerConfig
    image_token_id: int  # id of <image>
    text_family: str = "llama"
    select_strategy: str = "default"  # "default" drops the class token, "full" keeps it
    projector_bias: bool = True

    def __post_init__(self) -> None:
        if self.text_family not in TEXT_DECODERS:
            raise ValueError(f"text_family must be one of {sorted(TEXT_DECODERS)}, got {self.text_family!r}")
        if self.select_strategy not in SELECT_STRATEGIES:
            raise ValueError(f"select_strategy must be one of {SELECT_STRATEGIES}, got {self.select_strategy!r}")

    @property
    def tokens_per_image(self) -> int:
        return self.vision.grid_size**2 + (self.select_strategy == "full")


def llava_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> LlavaConfig:
    """LlavaConfig from an HF LLaVA ``config.json`` dict."""
    for key in ("vision_config", "text_config"):
        if key not in hf:
            raise ValueError(f"{where}: missing {key!r}")
    vision = hf["vision_config"]
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise ValueError(f"{where}: vision_config.model_type={vision['model_type']!r}; only CLIP is supported")
    feature_layer = hf.get("vision_feature_layer", -2)
    if not isinstance(feature_layer, int):
        raise ValueError(f"{where}: vision_feature_layer={feature_layer!r}: only a single layer is supported")
    if hf.get("projector_hidden_act", "gelu") != "gelu":
        raise ValueError(f"{where}: projector_hidden_act={hf['projector_hidden_act']!r}; only 'gelu'")
    token = hf.get("image_token_index", hf.get("image_token_id"))
    if token is None:
        raise ValueError(f"{where}: no image_token_index")
    family = text_family_of(hf["text_config"], where)
    return LlavaConfig(
        vision=clip_vit_config_from_hf(vision, feature_layer),
        text=text_config_from_hf(family, hf["text_config"], f"{where}: text_config"),
        image_token_id=int(token),
        text_family=family,
        select_strategy=hf.get("vision_feature_select_strategy", "default"),
        projector_bias=hf.get("multimodal_projector_bias", True),
    )


class Llava(VisionTowerLM):
    """LLaVA-1.5: images [N, 3, H, W] and token ids -> logits (and loss)."""

    def __init__(self, config: LlavaConfig) -> None:
        super().__init__()
        self.config = config
        self.image_token_id = config.image_token_id
        self.drop_class_token = config.select_strategy == "default"
        self.vision_tower = CLIPVisionEncoder(config.vision)
        self.multi_modal_projector = MLPProjector(
            config.vision.hidden_size, config.text.hidden_size, config.projector_bias, config.text.init_method_std
        )
        self.language_model = build_text_decoder(config.text_family, config.text)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] -> LLM inputs [N, tokens_per_image, text_hidden]."""
        return self.project_vision(self.vision_tower(pixel_values))

    def project_vision(self, hidden: torch.Tensor) -> torch.Tensor:
        """The vision encoder's output [N, 1 + P, C] -> LLM inputs [N, tokens_per_image, text_hidden]."""
        if self.drop_class_token:
            hidden = torch.split(hidden, [1, hidden.shape[1] - 1], dim=1)[1]
        return self.multi_modal_projector(hidden)

    def embed_vision_hidden(self, input_ids: torch.Tensor, vision_hidden: torch.Tensor) -> torch.Tensor:
        """``embed_inputs`` from the vision encoder's last layer output [N, 1 + P, C] (where a
        pipeline stage ends a vision encoder split over stages)."""
        features = self.project_vision(self.vision_tower.finish(vision_hidden))
        embeds = self.language_model.model.embed_tokens(input_ids)
        return splice_features(embeds, input_ids == self.image_token_id, features)

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token embeddings [B, L, hidden] with the image features at the <image> tokens, in order."""
        embeds = self.language_model.model.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        return splice_features(embeds, input_ids == self.image_token_id, self.get_image_features(pixel_values))

    def embedding_inputs(self, pixel_values=None, **unused: Any) -> Dict[str, np.ndarray]:
        """The keyword inputs of ``embed_inputs`` besides ``input_ids`` (numpy), from the data
        pipeline's vision inputs."""
        return {} if pixel_values is None else {"pixel_values": np.asarray(pixel_values)}

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """input_ids [B, L] with ``tokens_per_image`` <image> ids per image; pixel_values
        [N, 3, H, W], the images of the whole batch in order; attention_mask [B, L] (1 token,
        0 padding); labels [B, L] with -100 where no loss is taken; segment_ids [B, L] for
        packed rows (tokens attend within their segment; position_ids restart at each).
        Returns logits [B, L, V], or (loss, logits) with labels."""
        embeds = self.embed_inputs(input_ids, pixel_values)
        return self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
            labels=labels,
        )


def from_hf_config(hf: Mapping[str, Any], where: str = "config.json", image_token_id: Optional[int] = None) -> Llava:
    """A Llava (random weights) from an HF LLaVA ``config.json`` dict."""
    config = llava_config_from_hf(hf, where)
    if image_token_id is not None:
        config.image_token_id = image_token_id
    return Llava(config)


def from_model_json(config: ModelConfig) -> Llava:
    """A Llava from a validated ``model.json`` (CLIP ViT, MLP projector, Llama or Qwen2 text)."""
    where = f"{config.source}: image_encoder"
    encoder = construct(CLIPViTConfig, config.sections[VISION_ENCODER], f"{where}.vision_encoder")
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    vision = ViTConfig(**{k: v for k, v in dataclasses.asdict(encoder).items() if k in fields})
    projector = construct(MLPProjectorConfig, config.sections[VISION_PROJECTOR], f"{where}.vision_projector")
    try:
        llava = LlavaConfig(vision=vision, text=text_config(config), text_family=config.sections[TEXT_DECODER].model_id,
                            select_strategy=encoder.select_strategy, projector_bias=projector.bias, **config.options)
    except ValueError as err:
        raise ModelConfigError(f"{where}.vision_encoder.select_strategy: {err}") from err
    return Llava(llava)


def unused_checkpoint_keys(config: LlavaConfig) -> Pattern[str]:
    """MM names of checkpoint tensors of CLIP parts that are not built (layers after the
    feature layer, ``post_layernorm``)."""
    vision = config.vision
    skipped = [rf"encoder\.layers\.{i}\." for i in range(vision.layers_used, vision.num_layers)]
    skipped.append(r"post_layernorm\.")
    return re.compile(r"^vision_tower\.(" + "|".join(skipped) + ")")
