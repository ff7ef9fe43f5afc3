"""Prompts with images and videos for ``msmm-infer``, prepared exactly as in training.

Given the training ``data.json``, a prompt ``{"prompt": "What colour is the circle?",
"images": ["shapes.png"], "videos": ["clip.mp4"]}`` goes through the data pipeline of that
config (InternVL, Qwen2-VL / Qwen2.5-VL or LLaVA): the images and video frames through its
preprocessing (InternVL tiling, Qwen2-VL smart resize and patches, LLaVA CLIP crops; frames
sampled as in training), the text through its chat template as a user turn (an ``<image>``
placeholder per image and a ``<video>`` per video, put first unless the text has them), the
vision context tokens repeated to each image's / video's embeddings, then the assistant prefix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..data.image_processing import load_image
from ..data.records import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Message
from ..data.templates import ConversationEncoder
from ..data.video import read_video

PromptSpec = Union[str, Dict[str, Any]]


@dataclass
class PreparedPrompt:
    text: str  # the user's text, for display
    images: List[str]  # image and video paths, for display
    input_ids: np.ndarray  # [1, L]
    vision: Dict[str, np.ndarray] = field(default_factory=dict)  # the model's pixel_values, grids, flags


class PromptBuilder:
    """Prompt specs -> model inputs, through the data pipeline of a training ``data.json``."""

    def __init__(self, data: Union[str, "DataConfig"], tokenizer, system: Optional[str] = None) -> None:
        """``data``: the training data.json's path, or its DataConfig (a MindSpeed-MM
        inference JSON's preprocessing)."""
        from ..config.data_config import DataConfig, load_data_config
        from ..data.build import build_vision

        config = data if isinstance(data, DataConfig) else load_data_config(data)
        self.family = config.model_family  # internvl, qwen2vl, llava
        self.vision = build_vision(config)
        self.encoder = ConversationEncoder(tokenizer, config.template, config.model_family, system)

    def __call__(self, spec: PromptSpec, where: str = "prompts") -> PreparedPrompt:
        text, images, videos = parse_prompt(spec, where)
        if videos and self.vision.frames is None:
            raise ValueError(f"{where}.videos: a {self.family} model takes no video")
        content = text
        if (images or videos) and IMAGE_PLACEHOLDER not in text and VIDEO_PLACEHOLDER not in text:
            content = IMAGE_PLACEHOLDER * len(images) + VIDEO_PLACEHOLDER * len(videos) + self.encoder.vision.text_sep + text
        loaded = [_read(f"{where}.images[{j}]", p, load_image) for j, p in enumerate(images)]
        frames = [_read(f"{where}.videos[{j}]", p, lambda q: read_video(q, self.vision.frames, np.random.default_rng(0)))
                  for j, p in enumerate(videos)]
        vision, image_tokens, video_tokens = self.vision(loaded, frames, None)
        ids = self.encoder.encode_prompt([Message("user", content)], image_tokens, video_tokens)
        return PreparedPrompt(text, images + videos, ids[None], vision if images or videos else {})


def _read(where: str, path: str, read):
    """``read(path)``, or a ValueError naming the prompt, the key and the path."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: {path}: file not found")
    try:
        return read(path)
    except Exception as err:  # PIL and decord raise many kinds for a file they cannot decode
        raise ValueError(f"{where}: {path}: cannot be decoded ({type(err).__name__}: {err})") from None


def parse_prompt(spec: PromptSpec, where: str) -> tuple[str, List[str], List[str]]:
    """(text, image paths, video paths) of a prompt given as a string or
    ``{"prompt": ..., "images": [...], "videos": [...]}``."""
    if isinstance(spec, str):
        return spec, [], []
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str):
        raise ValueError(f"{where}: a prompt is a string or {{'prompt': str, 'images': [paths], 'videos': [paths]}}, "
                         f"got {spec!r}")
    unknown = sorted(set(spec) - {"prompt", "images", "videos"})
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key; known: ['images', 'prompt', 'videos']")
    media = []
    for key in ("images", "videos"):
        paths = spec.get(key, [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"{where}.{key}: expected a list of paths, got {paths!r}")
        media.append(paths)
    return spec["prompt"], media[0], media[1]
