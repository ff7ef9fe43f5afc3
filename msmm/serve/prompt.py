"""Chat messages -> model inputs for the checkpoint being served: the family's chat template
(``msmm.data.templates``, as msmm-eval picks it from config.json) and its image preprocessing
(msmm-eval's ``VisionProcessor``, with the settings of config.json and preprocessor_config.json)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..data.records import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Message
from ..data.templates import ConversationEncoder
from ..eval.prompts import VisionProcessor, VisionSettings, default_template, end_of_turn_ids
from ..registry import get_family

Part = Union[str, Image.Image]  # a text part or an image


@dataclass
class ChatPrompt:
    input_ids: np.ndarray  # [1, L]
    vision: Dict[str, np.ndarray]  # the model's pixel values, grids, flags (empty without images)
    image_tokens: int  # prompt tokens that are image embeddings


def preprocessor_settings(family: str, directory: str) -> Dict[str, Any]:
    """``VisionSettings`` overrides from the checkpoint's preprocessor_config.json (HF image
    processors): Qwen2-VL ``min_pixels`` / ``max_pixels``, InternVL tiles per image."""
    try:
        with open(os.path.join(directory, "preprocessor_config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    data_family = get_family(family).data_family
    if data_family == "qwen2vl":
        return {k: config[k] for k in ("min_pixels", "max_pixels") if isinstance(config.get(k), int)}
    if data_family == "internvl" and "crop_to_patches" in config:
        return {"max_tiles": int(config.get("max_patches", 12)) if config["crop_to_patches"] else 1}
    return {}


class ChatPromptBuilder:
    """OpenAI-style messages (role, parts) -> ``ChatPrompt`` for one family."""

    def __init__(self, family: str, hf_config: Dict[str, Any], tokenizer, config_dir: str) -> None:
        data_family = get_family(family).data_family
        settings = VisionSettings.from_hf_config(family, hf_config, **preprocessor_settings(family, config_dir))
        self.vision = VisionProcessor(settings)
        self.encoder = ConversationEncoder(tokenizer, default_template(family, hf_config), data_family)
        self.stop_token_ids = sorted(set(end_of_turn_ids(self.encoder) + (
            [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])))

    def content(self, parts: Sequence[Part]) -> Tuple[str, List[Image.Image]]:
        """A message's text with an image placeholder per image, in order (the family's separator
        between an image and the text after it), and its images."""
        text, images = "", []
        for k, part in enumerate(parts):
            if isinstance(part, Image.Image):
                images.append(part)
                text += IMAGE_PLACEHOLDER
                if k + 1 < len(parts) and isinstance(parts[k + 1], str):
                    text += self.encoder.vision.text_sep
            else:
                if IMAGE_PLACEHOLDER in part or VIDEO_PLACEHOLDER in part:
                    raise ValueError(f"message text holds a literal {IMAGE_PLACEHOLDER!r} or {VIDEO_PLACEHOLDER!r}: "
                                     "send images as image_url parts")
                text += part
        return text, images

    def __call__(self, messages: Sequence[Tuple[str, Sequence[Part]]]) -> ChatPrompt:
        turns, images = [], []
        for role, parts in messages:
            text, found = self.content(parts)
            turns.append(Message(role, text))
            images += found
        vision, tokens = self.vision(images) if images else ({}, [])
        ids = self.encoder.encode_prompt(turns, tokens)
        return ChatPrompt(ids[None], vision, int(sum(tokens)))
