"""Qwen2-VL / Qwen2.5-VL: the Qwen ViT, spliced into a Qwen2 decoder with M-RoPE.

Module tree (= HF Hub checkpoint keys): ``visual`` (QwenVisionTransformer), ``model``
(the Qwen2 DecoderModel), ``lm_head``. Vision features replace the embeddings of the
``<|image_pad|>`` / ``<|video_pad|>`` tokens in order; all images then all videos go through
the ViT in one call. Metadata (M-RoPE position ids, ViT positions/segments/windows) is
computed by ``prepare_metadata`` in numpy; ``forward`` computes it itself only when it is
not passed (eager convenience; graph mode passes it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from msmm.registry import VISION_ENCODER

from .core import TransformerConfig
from .model_config import ModelConfig, ModelConfigError, construct, text_config
from .qwen2_vl_meta import get_rope_index, vision_metadata
from .text import CausalLM, causal_lm_loss, qwen2_config_from_hf
from .text.qwen2 import qwen2_layer_spec
from .vision.qwen2_vit import QwenVisionTransformer, QwenViTConfig, qwen_vit_config_from_hf


@dataclass
class Qwen2VLConfig:
    vision: QwenViTConfig
    text: TransformerConfig
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> "Qwen2VLConfig":
        """From a Qwen2-VL / Qwen2.5-VL ``config.json`` dict (``model_type`` picks the ViT);
        text fields are read from ``text_config`` if present, else from the top level."""
        model_type = hf.get("model_type")
        if model_type not in ("qwen2_vl", "qwen2_5_vl"):
            raise ValueError(f"config.json model_type must be 'qwen2_vl' or 'qwen2_5_vl', got {model_type!r}")
        text = qwen2_config_from_hf(hf.get("text_config") or hf)
        if text.mrope_section is None:
            raise ValueError("config.json: rope_scaling.mrope_section is required for Qwen2-VL")
        return cls(
            vision=qwen_vit_config_from_hf(hf["vision_config"], qwen2_5=model_type == "qwen2_5_vl"),
            text=text,
            image_token_id=hf.get("image_token_id", 151655),
            video_token_id=hf.get("video_token_id", 151656),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
        )


def splice(embeds: torch.Tensor, is_slot: torch.Tensor, features: torch.Tensor, offset: int) -> torch.Tensor:
    """Replace the embeddings at ``is_slot`` [B, L] positions, in row-major order, with
    ``features[offset], features[offset + 1], ...`` [M, H]. Static shapes throughout."""
    b, l, h = embeds.shape
    slot = is_slot.reshape(b * l)
    count = slot.to(torch.int64)
    index = (torch.cumsum(count, dim=0) - 1) * count + offset  # non-slot rows read features[offset]
    picked = torch.index_select(features, 0, index)
    return torch.where(slot.unsqueeze(-1), picked.to(embeds.dtype), embeds.reshape(b * l, h)).reshape(b, l, h)


def _numpy(x: Any) -> Optional[np.ndarray]:
    return None if x is None else np.asarray(x)


class Qwen2VL(CausalLM):
    """Qwen2-VL or Qwen2.5-VL for conditional generation: a Qwen2 causal LM plus ``visual``."""

    def __init__(self, config: Qwen2VLConfig) -> None:
        super().__init__(config.text, qwen2_layer_spec())
        self.config = config
        self.visual = QwenVisionTransformer(config.vision)

    @property
    def vision_token_ids(self) -> Tuple[int, ...]:
        """Ids whose embeddings ``embed_inputs`` replaces: <|image_pad|>, <|video_pad|>."""
        return self.config.image_token_id, self.config.video_token_id

    def prompt_position_ids(
        self,
        input_ids,
        attention_mask=None,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        segment_ids=None,
        **pixels: Any,
    ) -> np.ndarray:
        """M-RoPE position ids [3, B, L] (numpy) of a (left-padded) prompt [B, L], from the
        image / video grids, as HF's ``get_rope_index``; ``pixels`` are not needed. With
        ``segment_ids`` (packed rows) the positions restart at each packed sample."""
        vc = self.config.vision
        position_ids, _ = get_rope_index(
            _numpy(input_ids),
            _numpy(image_grid_thw),
            _numpy(video_grid_thw),
            _numpy(attention_mask),
            spatial_merge_size=vc.spatial_merge_size,
            image_token_id=self.config.image_token_id,
            video_token_id=self.config.video_token_id,
            vision_start_token_id=self.config.vision_start_token_id,
            second_per_grid_ts=_numpy(second_per_grid_ts),
            tokens_per_second=vc.tokens_per_second,
            segment_ids=_numpy(segment_ids),
        )
        return position_ids

    def vit_metadata(self, image_grid_thw=None, video_grid_thw=None) -> Dict[str, np.ndarray]:
        """The ViT's ``vision_*`` inputs (numpy) for all images then all videos; empty
        without either."""
        vc = self.config.vision
        grids = [g for g in (_numpy(image_grid_thw), _numpy(video_grid_thw)) if g is not None]
        if not grids:
            return {}
        return vision_metadata(
            np.concatenate(grids), vc.spatial_merge_size, vc.window_size, vc.patch_size if vc.is_qwen2_5 else None
        )

    def prepare_metadata(
        self,
        input_ids,
        attention_mask=None,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        segment_ids=None,
    ) -> Dict[str, np.ndarray]:
        """The numpy metadata ``forward`` takes: ``position_ids`` [3, B, L] (restarting at each
        packed sample of ``segment_ids``) and the ViT's ``vision_*`` inputs (absent without
        images/videos). Call it in the data pipeline."""
        meta = {
            "position_ids": self.prompt_position_ids(
                input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts, segment_ids
            )
        }
        meta.update(self.vit_metadata(image_grid_thw, video_grid_thw))
        return meta

    def embedding_inputs(
        self,
        pixel_values=None,
        image_grid_thw=None,
        pixel_values_videos=None,
        video_grid_thw=None,
        **unused: Any,
    ) -> Dict[str, np.ndarray]:
        """The keyword inputs of ``embed_inputs`` besides ``input_ids`` (numpy): the pixels
        and the ViT metadata of their grids."""
        inputs = {"pixel_values": pixel_values, "pixel_values_videos": pixel_values_videos}
        inputs = {k: np.asarray(v) for k, v in inputs.items() if v is not None}
        if inputs:
            inputs.update(self.vit_metadata(image_grid_thw, video_grid_thw))
        return inputs

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_position_ids: torch.Tensor,
        vision_segment_ids: torch.Tensor,
        vision_window_segment_ids: Optional[torch.Tensor] = None,
        vision_window_index: Optional[torch.Tensor] = None,
        vision_reverse_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Patches [N, C*T*P*P] of images and/or videos (with the ``vision_*`` metadata of
        their grids) -> LLM inputs [N / merge_unit, text_hidden]."""
        return self.visual(
            pixel_values,
            vision_position_ids,
            vision_segment_ids,
            vision_window_segment_ids,
            vision_window_index,
            vision_reverse_index,
        )

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        pixel_values_videos: Optional[torch.Tensor] = None,
        vision_position_ids: Optional[torch.Tensor] = None,
        vision_segment_ids: Optional[torch.Tensor] = None,
        vision_window_segment_ids: Optional[torch.Tensor] = None,
        vision_window_index: Optional[torch.Tensor] = None,
        vision_reverse_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Token embeddings [B, L, hidden] with the image features, then the video features,
        at the <|image_pad|> / <|video_pad|> tokens: all images and videos go through the
        ViT in one call (image patches first)."""
        embeds = self.model.embed_tokens(input_ids)
        if pixel_values is None and pixel_values_videos is None:
            return embeds
        pixels = [p for p in (pixel_values, pixel_values_videos) if p is not None]
        features = self.get_image_features(
            torch.cat(pixels, dim=0) if len(pixels) > 1 else pixels[0],
            vision_position_ids,
            vision_segment_ids,
            vision_window_segment_ids,
            vision_window_index,
            vision_reverse_index,
        )
        n_image_tokens = 0
        if pixel_values is not None:
            embeds = splice(embeds, input_ids == self.config.image_token_id, features, 0)
            n_image_tokens = pixel_values.shape[0] // self.visual.merge_unit
        if pixel_values_videos is not None:
            embeds = splice(embeds, input_ids == self.config.video_token_id, features, n_image_tokens)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        image_grid_thw: Optional[torch.Tensor] = None,
        pixel_values_videos: Optional[torch.Tensor] = None,
        video_grid_thw: Optional[torch.Tensor] = None,
        second_per_grid_ts: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        vision_position_ids: Optional[torch.Tensor] = None,
        vision_segment_ids: Optional[torch.Tensor] = None,
        vision_window_segment_ids: Optional[torch.Tensor] = None,
        vision_window_index: Optional[torch.Tensor] = None,
        vision_reverse_index: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """logits [B, L, V]; with ``labels`` [B, L] (-100 = ignored) returns (loss, logits).

        pixel_values [Ni, C*T*P*P] with image_grid_thw [n_images, 3]; pixel_values_videos
        [Nv, C*T*P*P] with video_grid_thw [n_videos, 3]; position_ids [3, B, L] and the
        ``vision_*`` tensors as from ``prepare_metadata``; segment_ids [B, L] for packing.
        """
        has_vision = pixel_values is not None or pixel_values_videos is not None
        if position_ids is None or (has_vision and vision_position_ids is None):
            meta = self.prepare_metadata(
                input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts, segment_ids
            )
            meta = {k: torch.tensor(v) for k, v in meta.items()}
            position_ids = meta["position_ids"] if position_ids is None else position_ids
            if has_vision and vision_position_ids is None:
                vision_position_ids = meta["vision_position_ids"]
                vision_segment_ids = meta["vision_segment_ids"]
                vision_window_segment_ids = meta.get("vision_window_segment_ids")
                vision_window_index = meta.get("vision_window_index")
                vision_reverse_index = meta.get("vision_reverse_index")

        embeds = self.embed_inputs(
            input_ids,
            pixel_values,
            pixel_values_videos,
            vision_position_ids,
            vision_segment_ids,
            vision_window_segment_ids,
            vision_window_index,
            vision_reverse_index,
        )
        hidden = self.model(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask, segment_ids=segment_ids
        )
        logits = self.lm_head(hidden)
        if labels is None:
            return logits
        return causal_lm_loss(logits, labels), logits


def from_hf_config(hf: Mapping[str, Any], where: str = "config.json", image_token_id: Optional[int] = None) -> Qwen2VL:
    """A Qwen2VL (random weights) from a Qwen2-VL / Qwen2.5-VL ``config.json`` dict."""
    try:
        config = Qwen2VLConfig.from_hf(hf)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err
    if image_token_id is not None:
        config.image_token_id = image_token_id
    return Qwen2VL(config)


def from_model_json(config: ModelConfig) -> Qwen2VL:
    """A Qwen2VL from a validated ``model.json`` (``qwen2_vit`` or ``qwen2_5_vit``, patch merger, Qwen2 text)."""
    text = text_config(config)
    encoder = config.sections[VISION_ENCODER]
    where = f"{config.source}: {VISION_ENCODER}"
    vision = construct(QwenViTConfig, encoder, where, out_hidden_size=text.hidden_size)
    if encoder.model_id == "qwen2_5_vit" and vision.window_size is None:
        raise ModelConfigError(f"{where}.window_size: required for model_id 'qwen2_5_vit'")
    if encoder.model_id == "qwen2_vit" and vision.window_size is not None:
        raise ModelConfigError(f"{where}.window_size: only 'qwen2_5_vit' has window attention")
    if text.mrope_section is None:
        raise ModelConfigError(f"{config.source}: text_decoder.mrope_section: required for {config.model_id}")
    return Qwen2VL(Qwen2VLConfig(vision=vision, text=text, **config.options))
