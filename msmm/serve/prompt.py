"""Chat messages -> model inputs for the checkpoint being served: the family's chat template
(``msmm.data.templates``, as msmm-eval picks it from config.json), its image preprocessing
(msmm-eval's ``VisionProcessor``, with the settings of config.json and preprocessor_config.json)
and, for the families that take video, the training pipeline's frame sampling and video
preprocessing (Qwen2-VL: frames at 2 per second, 4 to 768, sized by video_preprocessor_config.json
or the defaults of ``msmm.config.data_config``; InternVL: 8 frames at the middles of 8 equal
segments)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..config.data_config import PreprocessParameters
from ..data.image_processing import Qwen2VLImageTransform
from ..data.records import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Message
from ..data.templates import ConversationEncoder
from ..data.video import InternVLFrameSampler, Qwen2VLFrameSampler, Video
from ..eval.prompts import VisionProcessor, VisionSettings, default_template, end_of_turn_ids
from ..registry import get_family

Part = Union[str, Image.Image, Video]  # a text part, an image or a video's sampled frames
INTERNVL_VIDEO_FRAMES = 8  # InternVL: frames per video (segment middles), one tile each


@dataclass
class ChatPrompt:
    input_ids: np.ndarray  # [1, L]
    vision: Dict[str, np.ndarray]  # the model's pixel values, grids, flags (empty without images)
    vision_tokens: int  # prompt tokens that are image or video embeddings


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def preprocessor_settings(family: str, directory: str) -> Dict[str, Any]:
    """``VisionSettings`` overrides from the checkpoint's preprocessor_config.json (HF image
    processors): Qwen2-VL ``min_pixels`` / ``max_pixels``, InternVL tiles per image."""
    config = _read_json(os.path.join(directory, "preprocessor_config.json"))
    data_family = get_family(family).data_family
    if data_family == "qwen2vl":
        return {k: config[k] for k in ("min_pixels", "max_pixels") if isinstance(config.get(k), int)}
    if data_family == "internvl" and "crop_to_patches" in config:
        return {"max_tiles": int(config.get("max_patches", 12)) if config["crop_to_patches"] else 1}
    return {}


class ChatPromptBuilder:
    """OpenAI-style messages (role, parts) -> ``ChatPrompt`` for one family."""

    def __init__(self, family: str, hf_config: Dict[str, Any], tokenizer, config_dir: str) -> None:
        """``config_dir``: the checkpoint's config.json, preprocessor_config.json and (Qwen2-VL,
        optional) video_preprocessor_config.json, whose ``min_pixels`` / ``max_pixels`` size the
        video frames (default: msmm's training defaults)."""
        self.data_family = data_family = get_family(family).data_family
        self.settings = settings = VisionSettings.from_hf_config(family, hf_config,
                                                                 **preprocessor_settings(family, config_dir))
        self.vision = VisionProcessor(settings)
        video = PreprocessParameters()
        pixels = _read_json(os.path.join(config_dir, "video_preprocessor_config.json"))
        video_pixels = [pixels.get(k, default) for k, default in (("min_pixels", video.video_min_pixels),
                                                                  ("max_pixels", video.video_max_pixels))]
        # frames(total, fps, rng) -> the frame indices of a video; None: the family takes no video
        self.frames = (Qwen2VLFrameSampler(video.video_fps, video.video_minlen, video.video_maxlen,
                                           settings.temporal_patch_size) if data_family == "qwen2vl"
                       else InternVLFrameSampler(INTERNVL_VIDEO_FRAMES, INTERNVL_VIDEO_FRAMES, "middle")
                       if data_family == "internvl"
                       else None)
        self.video_transform = Qwen2VLImageTransform(*video_pixels, settings.patch_size, settings.temporal_patch_size,
                                                     settings.merge_size) if data_family == "qwen2vl" else None
        self.encoder = ConversationEncoder(tokenizer, default_template(family, hf_config), data_family)
        self.stop_token_ids = sorted(set(end_of_turn_ids(self.encoder) + (
            [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])))

    def content(self, parts: Sequence[Part]) -> Tuple[str, List[Union[Image.Image, Video]]]:
        """A message's text with a placeholder per image or video, in order (the family's
        separator between a medium and the text after it), and its images and videos."""
        text, media = "", []
        for k, part in enumerate(parts):
            if not isinstance(part, str):
                media.append(part)
                text += IMAGE_PLACEHOLDER if isinstance(part, Image.Image) else VIDEO_PLACEHOLDER
                if k + 1 < len(parts) and isinstance(parts[k + 1], str):
                    text += self.encoder.vision.text_sep
            else:
                if IMAGE_PLACEHOLDER in part or VIDEO_PLACEHOLDER in part:
                    raise ValueError(f"message text holds a literal {IMAGE_PLACEHOLDER!r} or {VIDEO_PLACEHOLDER!r}: "
                                     "send images as image_url parts")
                text += part
        return text, media

    def __call__(self, messages: Sequence[Tuple[str, Sequence[Part]]]) -> ChatPrompt:
        turns, media = [], []
        for role, parts in messages:
            text, found = self.content(parts)
            turns.append(Message(role, text))
            media += found
        images = [m for m in media if isinstance(m, Image.Image)]
        videos = [m for m in media if isinstance(m, Video)]
        vision, image_tokens = self.vision(images) if images else ({}, [])
        video_tokens: List[List[int]] = []
        if videos:
            vision, video_tokens = self._with_videos(media, vision, image_tokens, videos)
        ids = self.encoder.encode_prompt(turns, image_tokens, video_tokens)
        return ChatPrompt(ids[None], vision, int(sum(image_tokens) + sum(sum(v) for v in video_tokens)))

    def _with_videos(self, media: Sequence[Union[Image.Image, Video]], vision: Dict[str, np.ndarray],
                     image_tokens: List[int], videos: Sequence[Video]) -> Tuple[Dict[str, np.ndarray], List[List[int]]]:
        """The vision inputs with the videos' added, and each video's tokens per frame group, as
        the training pipeline (``msmm.data.dataset``) makes them: Qwen2-VL patches and grids of
        ``pixel_values_videos`` / ``video_grid_thw``; InternVL one tile per frame, its tiles in
        ``pixel_values`` in the order of the placeholders (images and videos interleaved)."""
        if self.data_family == "qwen2vl":
            patches, grids = zip(*(self.video_transform.frames(v.frames) for v in videos))
            merge = self.settings.merge_size ** 2
            return (dict(vision, pixel_values_videos=np.concatenate(patches),
                         video_grid_thw=np.asarray(grids, np.int64)), [[int(np.prod(g)) // merge] for g in grids])
        per_tile = self.vision.tokens_per_tile
        image_tiles = iter(np.split(vision["pixel_values"], np.cumsum([n // per_tile for n in image_tokens])[:-1])
                           if image_tokens else [])
        video_tiles = [np.concatenate([self.vision.transform(f, max_tiles=1) for f in v.frames]) for v in videos]
        videos_left = iter(video_tiles)
        pixels = np.concatenate([next(image_tiles) if isinstance(m, Image.Image) else next(videos_left) for m in media])
        return ({"pixel_values": pixels, "image_flags": np.ones(len(pixels), np.int64)},
                [[per_tile] * len(t) for t in video_tiles])
