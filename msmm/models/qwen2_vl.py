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

from .core import TransformerConfig
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

    def prepare_metadata(
        self,
        input_ids,
        attention_mask=None,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
    ) -> Dict[str, np.ndarray]:
        """The numpy metadata ``forward`` takes: ``position_ids`` [3, B, L] and the ViT's
        ``vision_*`` inputs (absent without images/videos). Call it in the data pipeline."""
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
        )
        meta = {"position_ids": position_ids}
        grids = [g for g in (_numpy(image_grid_thw), _numpy(video_grid_thw)) if g is not None]
        if grids:
            meta.update(
                vision_metadata(
                    np.concatenate(grids), vc.spatial_merge_size, vc.window_size,
                    vc.patch_size if vc.is_qwen2_5 else None,
                )
            )
        return meta

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
            meta = self.prepare_metadata(input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts)
            meta = {k: torch.tensor(v) for k, v in meta.items()}
            position_ids = meta["position_ids"] if position_ids is None else position_ids
            if has_vision and vision_position_ids is None:
                vision_position_ids = meta["vision_position_ids"]
                vision_segment_ids = meta["vision_segment_ids"]
                vision_window_segment_ids = meta.get("vision_window_segment_ids")
                vision_window_index = meta.get("vision_window_index")
                vision_reverse_index = meta.get("vision_reverse_index")

        embeds = self.model.embed_tokens(input_ids)
        if has_vision:
            pixels = [p for p in (pixel_values, pixel_values_videos) if p is not None]
            features = self.visual(
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

        hidden = self.model(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask, segment_ids=segment_ids
        )
        logits = self.lm_head(hidden)
        if labels is None:
            return logits
        return causal_lm_loss(logits, labels), logits
