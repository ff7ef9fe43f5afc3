"""Each family's prompt for each benchmark, as VLMEvalKit builds it, framework-free.

Text (``prompt_style="vlmevalkit"``, the default):

- multiple choice, InternVL and LLaVA (VLMEvalKit's ``build_multi_choice_prompt``; MMMU too):
  ``[hint\\n]question\\nA. ...\\nB. ...\\nAnswer with the option's letter from the given choices
  directly.`` (``请直接回答选项字母。`` for a Chinese prompt); without options ``Answer the
  question directly.``;
- multiple choice, Qwen2-VL / Qwen2.5-VL (``Qwen2VLPromptMixin``): ``[Hint: hint\\n]Question:
  question\\nOptions:\\nA. ...\\n`` then ``Please select the correct answer from the options
  above.`` (MMMU: the same, with a trailing space then stripped; the Chinese line for Chinese
  prompts outside MMMU);
- ChartQA / DocVQA: ``question\\nAnswer the question using a single word or phrase.``
  (InternVL, LLaVA); ``question\\nPlease try to answer the question with short words or phrases
  if possible.`` (Qwen2-VL).

``prompt_style="question"``: the question alone (a model fine-tuned on plain questions, e.g.
the quickstart's). MMMU's ``<image N>`` references stay in the text, as in VLMEvalKit.

Images: InternVL puts ``<image>\\n`` before the text for one image, ``Image-1: <image>\\nImage-2:
<image>\\n`` for several; Qwen2-VL puts every image first and the text right after; LLaVA
writes `` <image> `` per image, then the text (``USER:  <image> text ASSISTANT:``). The user turn
then goes through the family's chat template (msmm.data.templates) with its default system
prompt.

Vision inputs: InternVL dynamic tiles with a thumbnail, at most ``max(1, min(max_tiles, 64 //
images))`` tiles per image (``max_tiles``: 6 AI2D, 12 ChartQA and MMMU, 18 DocVQA), MMMU's first
image upscaled 2x (bilinear) first; Qwen2-VL smart resize within ``min_pixels``..``max_pixels``;
LLaVA pad to square with the mean colour, CLIP resize and crop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..registry import FAMILIES as _REGISTRY, get_family
from .datasets import DatasetSpec, Question

FAMILIES = tuple(_REGISTRY)  # msmm.registry's names; the prompt style follows a family's data_family
PROMPT_STYLES = ("vlmevalkit", "question")
MCQ_EN = "Answer with the option's letter from the given choices directly."
MCQ_CN = "请直接回答选项字母。"
OPEN_EN = "Answer the question directly."
OPEN_CN = "请直接回答问题。"
QWEN_MCQ_EN = "Please select the correct answer from the options above."
VQA_SHORT = "Answer the question using a single word or phrase."
QWEN_VQA = "Please try to answer the question with short words or phrases if possible."
TOTAL_MAX_TILES = 64  # InternVL: the tile budget of one question (VLMEvalKit's total_max_num)
_CN = re.compile("[\u4e00-\u9fff]")


def _style(family: str) -> str:
    """The VLMEvalKit wrapper a family's prompts follow, named by its data family
    (``internvl``, ``qwen2vl``, ``llava``: ``msmm.registry`` ``FamilySpec.data_family``)."""
    if family not in _REGISTRY:
        raise ValueError(f"family {family!r}: one of {FAMILIES}")
    return _REGISTRY[family].data_family


def _options_block(q: Question) -> str:
    return "".join(f"\n{k}. {v}" for k, v in q.options.items())


def question_text(family: str, spec: DatasetSpec, q: Question, style: str = "vlmevalkit") -> str:
    """The text of the user turn (without image markers)."""
    if style == "question":
        return q.question
    if style != "vlmevalkit":
        raise ValueError(f"prompt_style {style!r}: one of {PROMPT_STYLES}")
    qwen = _style(family) == "qwen2vl"
    if spec.kind == "vqa":
        return f"{q.question}\n{QWEN_VQA if qwen else VQA_SHORT}"
    if qwen:
        prompt = (f"Hint: {q.hint}\n" if q.hint else "") + f"Question: {q.question}\n"
        if q.options:
            prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in q.options.items())
            if spec.name == "mmmu_dev_val":
                prompt += QWEN_MCQ_EN + " \n"
            else:
                prompt += MCQ_CN if _CN.search(prompt) else QWEN_MCQ_EN
        return prompt.rstrip()
    prompt = (f"{q.hint}\n" if q.hint else "") + q.question + _options_block(q)
    if q.options:
        return prompt + "\n" + (MCQ_CN if _CN.search(prompt) else MCQ_EN)
    return prompt + "\n" + (OPEN_CN if _CN.search(prompt) else OPEN_EN)


def user_content(family: str, text: str, images: int, placeholder: str = "<image>") -> str:
    """The user turn with one ``placeholder`` per image where the family's VLMEvalKit wrapper
    puts it."""
    style = _style(family)
    if style == "internvl":
        if images == 1:
            return f"{placeholder}\n{text}"
        return "".join(f"Image-{k}: {placeholder}\n" for k in range(1, images + 1)) + text
    if style == "llava":
        return f" {placeholder} " * images + text
    return placeholder * images + text  # Qwen2-VL: images first, text right after


# ----------------------------------------------------------------------------- vision


@dataclass
class VisionSettings:
    """What the family's preprocessing needs, from the model's config.json and the eval config."""

    family: str
    image_size: int = 448  # InternVL tile / LLaVA crop
    patch_size: int = 14
    downsample_ratio: float = 0.5  # InternVL
    min_pixels: int = 56 * 56  # Qwen2-VL
    max_pixels: int = 28 * 28 * 1280
    merge_size: int = 2
    temporal_patch_size: int = 2
    max_tiles: Optional[int] = None  # InternVL: overrides the dataset's

    @classmethod
    def from_hf_config(cls, family: str, config: Dict[str, Any], **overrides: Any) -> "VisionSettings":
        vision = config.get("vision_config", {}) or {}

        def first(value, default):
            if isinstance(value, (list, tuple)):
                value = value[0]
            return default if value is None else value

        style = _style(family)
        if style == "internvl":
            size = config.get("force_image_size") or vision.get("image_size")
            values = dict(image_size=int(first(size, 448)), patch_size=int(first(vision.get("patch_size"), 14)),
                          downsample_ratio=float(config.get("downsample_ratio", 0.5)))
        elif style == "llava":
            values = dict(image_size=int(first(vision.get("image_size"), 336)),
                          patch_size=int(first(vision.get("patch_size"), 14)))
        else:
            values = dict(patch_size=int(vision.get("patch_size", 14)), merge_size=int(vision.get("spatial_merge_size", 2)),
                          temporal_patch_size=int(vision.get("temporal_patch_size", 2)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(family, **values)


class VisionProcessor:
    """Images of one question (or chat request) -> the model's vision inputs and the embeddings
    per image. ``max_tiles``: InternVL's tiles per image where the settings give none;
    ``upscale_first``: the first image upscaled 2x first (VLMEvalKit's MMMU)."""

    def __init__(self, settings: VisionSettings, max_tiles: int = 6, upscale_first: bool = False) -> None:
        from ..data.image_processing import CLIPImageTransform, InternVLImageTransform, Qwen2VLImageTransform

        self.settings, self.upscale_first = settings, upscale_first
        s = settings
        self.style = style = _style(s.family)
        if style == "internvl":
            self.max_tiles = s.max_tiles or max_tiles
            self.transform = InternVLImageTransform(s.image_size, 1, self.max_tiles, True, True)
            self.tokens_per_tile = int((s.image_size // s.patch_size) ** 2 * s.downsample_ratio ** 2)
        elif style == "llava":
            self.transform = CLIPImageTransform(s.image_size, s.image_size, pad_to_square=True)
            self.tokens = (s.image_size // s.patch_size) ** 2
        elif style == "qwen2vl":
            self.transform = Qwen2VLImageTransform(s.min_pixels, s.max_pixels, s.patch_size, s.temporal_patch_size,
                                                   s.merge_size)
        else:
            raise ValueError(f"family {s.family!r}: no VLMEvalKit preprocessing for its data family {style!r}")

    def __call__(self, images: Sequence[Image.Image]) -> Tuple[Dict[str, np.ndarray], List[int]]:
        if self.style == "internvl":
            per_image = max(1, min(self.max_tiles, TOTAL_MAX_TILES // len(images)))
            tiles = []
            for k, image in enumerate(images):
                if k == 0 and self.upscale_first:
                    image = image.resize((image.width * 2, image.height * 2), Image.BILINEAR)
                tiles.append(self.transform(image, max_tiles=per_image))
            pixels = np.concatenate(tiles)
            return ({"pixel_values": pixels, "image_flags": np.ones(len(pixels), np.int64)},
                    [len(t) * self.tokens_per_tile for t in tiles])
        if self.style == "llava":
            return {"pixel_values": np.stack([self.transform(im) for im in images])}, [self.tokens] * len(images)
        patches, grids = zip(*(self.transform(im) for im in images))
        merge = self.settings.merge_size ** 2
        return ({"pixel_values": np.concatenate(patches), "image_grid_thw": np.asarray(grids, np.int64)},
                [int(np.prod(g)) // merge for g in grids])


def concat_vision(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """The vision inputs of a batch: each key's rows of every question, in order."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass
class PromptTemplate:
    """The chat template of the family (msmm.data.templates name) and optional system prompt."""

    template: str
    system: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def default_template(family: str, hf_config: Optional[Dict[str, Any]] = None) -> str:
    """InternVL: the checkpoint's own ``template`` (remote-code configs name it), InternLM2 text
    -> ``internlm2-chat``, else the registry's ``chat_template`` (``internvl2_5``); the other
    families have one template (the registry's)."""
    if _style(family) == "internvl" and hf_config:
        named = hf_config.get("template")
        if named in ("internlm2-chat", "internvl2_5"):
            return named
        try:
            if get_family(family).text_family(hf_config) == "internlm2":
                return "internlm2-chat"
        except (KeyError, ValueError):  # no text config, or a text model msmm does not build
            pass
    return get_family(family).chat_template


class PromptEncoder:
    """Question -> (input_ids [L], vision inputs) for one family and dataset."""

    def __init__(self, family: str, spec: DatasetSpec, tokenizer, vision: VisionSettings,
                 template: str, system: Optional[str] = None, style: str = "vlmevalkit") -> None:
        from ..data.records import IMAGE_PLACEHOLDER
        from ..data.templates import ConversationEncoder

        vision_tokens = _style(family)
        if style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style {style!r}: one of {PROMPT_STYLES}")
        self.family, self.spec, self.style = family, spec, style
        self.placeholder = IMAGE_PLACEHOLDER
        self.encoder = ConversationEncoder(tokenizer, template, vision_tokens, system)
        self.vision = VisionProcessor(vision, spec.max_tiles, upscale_first=spec.name == "mmmu_dev_val")

    def text(self, q: Question) -> str:
        return user_content(self.family, question_text(self.family, self.spec, q, self.style), len(q.images),
                            self.placeholder)

    def __call__(self, q: Question, images: Sequence[Image.Image]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        from ..data.records import Message

        text = question_text(self.family, self.spec, q, self.style)
        if self.placeholder in text or "<video>" in text:
            raise ValueError(f"the question text holds a literal {self.placeholder!r} or '<video>'")
        vision, tokens = self.vision(images)
        ids = self.encoder.encode_prompt([Message("user", self.text(q))], tokens)
        return ids, vision

    def stop_token_ids(self) -> List[int]:
        return end_of_turn_ids(self.encoder)


def end_of_turn_ids(encoder) -> List[int]:
    """The chat template's end-of-turn token when it is one token (``<|im_end|>``, ``</s>``);
    ``encoder``: a ``msmm.data.templates.ConversationEncoder``."""
    tok = encoder.tokenizer
    suffix = encoder.template.assistant_suffix.format(bos=tok.bos_token or "", eos=tok.eos_token or "").strip()
    ids = tok.convert_tokens_to_ids([suffix]) if suffix else []
    return [i for i in ids if i is not None and i != tok.unk_token_id]
