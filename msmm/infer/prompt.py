"""Prompts with images for ``msmm-infer``, prepared exactly as in training.

Given the training ``data.json``, a prompt ``{"prompt": "What colour is the circle?",
"images": ["shapes.png"]}`` goes through the data pipeline of that config: the images through
its preprocessing (InternVL tiling at its tile size), the text through its chat template as a
user turn (an ``<image>`` placeholder per image, put first unless the text has them), the
vision context token repeated to each image's embeddings, then the assistant prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..data.image_processing import load_image
from ..data.records import IMAGE_PLACEHOLDER, Message
from ..data.templates import ConversationEncoder

PromptSpec = Union[str, Dict[str, Any]]


@dataclass
class PreparedPrompt:
    text: str  # the user's text, for display
    images: List[str]
    input_ids: np.ndarray  # [1, L]
    vision: Dict[str, np.ndarray] = field(default_factory=dict)  # pixel_values [N, 3, S, S], image_flags [N]


class PromptBuilder:
    """Prompt specs -> model inputs, through the data pipeline of a training ``data.json``."""

    def __init__(self, data_json: str, tokenizer, system: Optional[str] = None) -> None:
        from ..config.data_config import load_data_config
        from ..data.build import build_vision

        config = load_data_config(data_json)
        if config.model_family != "internvl":
            raise ValueError(f"{data_json}: prompts with images are wired for InternVL only, "
                             f"this data.json is for {config.model_family}")
        self.vision = build_vision(config)
        self.encoder = ConversationEncoder(tokenizer, config.template, config.model_family, system)

    def __call__(self, spec: PromptSpec, where: str = "prompts") -> PreparedPrompt:
        text, images = parse_prompt(spec, where)
        content = text if IMAGE_PLACEHOLDER in text or not images else IMAGE_PLACEHOLDER * len(images) + "\n" + text
        vision, image_tokens, _ = self.vision([load_image(p) for p in images], [], None)
        ids = self.encoder.encode_prompt([Message("user", content)], image_tokens)
        return PreparedPrompt(text, images, ids[None], vision if images else {})


def parse_prompt(spec: PromptSpec, where: str) -> tuple[str, List[str]]:
    """(text, image paths) of a prompt given as a string or ``{"prompt": ..., "images": [...]}``."""
    if isinstance(spec, str):
        return spec, []
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str):
        raise ValueError(f"{where}: a prompt is a string or {{'prompt': str, 'images': [paths]}}, got {spec!r}")
    unknown = sorted(set(spec) - {"prompt", "images"})
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key; known: ['images', 'prompt']")
    images = spec.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise ValueError(f"{where}.images: expected a list of paths, got {images!r}")
    return spec["prompt"], images
