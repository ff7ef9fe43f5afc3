"""Chat templates, image/video token expansion and label masking.

A conversation is rendered to one string with the spans the model learns from (the answers
and their end token), tokenised in one call with offsets, and the learned spans mapped to
tokens the way ``apply_chat_template(..., return_assistant_tokens_mask=True)`` maps its
``{% generation %}`` blocks. Everything else is ``-100`` in ``labels``.

``<image>`` / ``<video>`` placeholders become the model's marker text with its context token
once; after tokenisation each context token is repeated to the number of vision embeddings
of its image (tiles x 256 for InternVL, merged patches for Qwen2-VL, 576 for LLaVA-1.5). This
gives the ids of tokenising the fully expanded text, without tokenising thousands of tokens.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from msmm.data.records import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Message

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ChatTemplate:
    """How turns are written. ``{content}`` is the turn's text; ``{bos}``/``{eos}`` the tokenizer's."""

    name: str
    prefix: str  # before everything (e.g. "{bos}")
    system: str
    user: str
    assistant_prefix: str  # not learned
    assistant_suffix: str  # learned with the answer (the end-of-turn token)
    assistant_end: str  # after the suffix, not learned
    default_system: Optional[str]
    user_text: bool = True  # False for "plain": a user turn keeps only its placeholders


INTERNVL_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
INTERNLM2_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

TEMPLATES = {
    t.name: t
    for t in (
        # InternVL2.5/3: ChatML; the newline after <|im_end|> is not learned (InternVL's preprocess_internvl2_5).
        ChatTemplate("internvl2_5", "", "<|im_start|>system\n{content}<|im_end|>\n", "<|im_start|>user\n{content}<|im_end|>\n",
                     "<|im_start|>assistant\n", "<|im_end|>", "\n", INTERNVL_SYSTEM),
        # InternVL2 with InternLM2: BOS, then ChatML turns without newlines between them (MPT style).
        ChatTemplate("internlm2-chat", "{bos}", "<|im_start|>system\n{content}<|im_end|>", "<|im_start|>user\n{content}<|im_end|>",
                     "<|im_start|>assistant\n", "<|im_end|>", "", INTERNLM2_SYSTEM),
        # Qwen2-VL: ChatML; "<|im_end|>\n" is learned (LLaMA-Factory's qwen2_vl template, used by MindSpeed-MM).
        ChatTemplate("qwen2vl", "", "<|im_start|>system\n{content}<|im_end|>\n", "<|im_start|>user\n{content}<|im_end|>\n",
                     "<|im_start|>assistant\n", "<|im_end|>\n", "", "You are a helpful assistant."),
        # LLaVA-1.5 fine-tuning (vicuna_v1): "SYS USER: q ASSISTANT: a</s>USER: ...".
        ChatTemplate("llava-v1", "{bos}", "{content} ", "USER: {content} ", "ASSISTANT: ", "{eos}", "", VICUNA_SYSTEM),
        # LLaVA-1.5 pre-training: "<image>caption\n", only the caption is learned.
        ChatTemplate("plain", "{bos}", "", "{content}", "", "\n", "", None, user_text=False),
    )
}


@dataclass(frozen=True)
class VisionTokens:
    """Marker text of one image (holding ``context`` once) and of one video frame group."""

    image: str
    context: str
    video: str  # one temporal group (Qwen2-VL) or one frame (InternVL: "Frame{index}: ...")
    video_context: str
    video_frame_sep: str = ""  # between the frames' markers
    text_sep: str = ""  # between leading <image>/<video> placeholders and the text, as in the family's data


VISION_TOKENS = {
    "internvl": VisionTokens("<img><IMG_CONTEXT></img>", "<IMG_CONTEXT>", "Frame{index}: <img><IMG_CONTEXT></img>", "<IMG_CONTEXT>", "\n",
                             text_sep="\n"),
    "qwen2vl": VisionTokens("<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>",
                            "<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>"),
    "llava": VisionTokens("<image>", "<image>", "<image>", "<image>", text_sep="\n"),
}

# families whose context token a text-only tokenizer lacks and gets added, as HF's conversion of
# LLaVA-1.5 adds "<image>" to Vicuna's tokenizer (LLaVA stage 1 starts from Vicuna's)
ADDED_IF_MISSING = ("llava",)


def add_missing_vision_tokens(tokenizer, family: str) -> Optional[str]:
    """Add ``family``'s context token to a tokenizer that lacks it (``ADDED_IF_MISSING``), as a
    special token with the next id; returns a line saying so, or None."""
    token = VISION_TOKENS[family].context
    if family not in ADDED_IF_MISSING or token in tokenizer.get_vocab():
        return None
    tokenizer.add_special_tokens({"additional_special_tokens": [token]}, replace_additional_special_tokens=False)
    return (f"tokenizer {tokenizer.name_or_path}: no {token} token, added as id {tokenizer.convert_tokens_to_ids(token)} "
            "(as HF's LLaVA-1.5 conversion adds it to Vicuna's); model.json image_token_id must be that id")


_PLACEHOLDER = re.compile(f"{re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)}")


class PlaceholderError(ValueError):
    """The text's placeholders or context tokens do not match the images/videos given."""


@dataclass
class EncodedConversation:
    input_ids: np.ndarray  # (L,) int64
    labels: np.ndarray  # (L,) int64, IGNORE_INDEX where not learned


class ConversationEncoder:
    """``messages`` + vision token counts -> ``input_ids`` and ``labels``.

    ``image_tokens[i]``: embeddings of image ``i``; ``video_tokens[j]``: embeddings of each
    frame (InternVL) or temporal group (Qwen2-VL) of video ``j``.
    """

    def __init__(self, tokenizer, template: ChatTemplate | str, vision: VisionTokens | str, system: Optional[str] = None) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("ConversationEncoder needs a fast tokenizer (it reads token offsets)")
        self.tokenizer = tokenizer
        self.template = TEMPLATES[template] if isinstance(template, str) else template
        self.vision = VISION_TOKENS[vision] if isinstance(vision, str) else vision
        self.system = system
        ids = tokenizer.convert_tokens_to_ids([self.vision.context, self.vision.video_context])
        if None in ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
            raise ValueError(f"tokenizer lacks {self.vision.context!r} or {self.vision.video_context!r}")
        self.context_ids = np.array(sorted(set(ids)))
        try:
            from transformers import PreTrainedTokenizerFast
            from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        except ImportError:  # a tokenizer of another kind: always called as it is
            PreTrainedTokenizerFast = PreTrainedTokenizerBase = None
        kind = type(tokenizer)
        plain = (PreTrainedTokenizerFast is not None and isinstance(tokenizer, PreTrainedTokenizerFast)
                 and all(getattr(kind, name) is getattr(PreTrainedTokenizerBase, name)
                         for name in ("__call__", "_call_one", "encode_plus"))
                 and all(getattr(kind, name) is getattr(PreTrainedTokenizerFast, name)
                         for name in ("_encode_plus", "_batch_encode_plus", "set_truncation_and_padding")))
        self._backend = tokenizer._tokenizer if plain else None  # see _encode

    def render(
        self, messages: Sequence[Message], video_groups: Sequence[int] = ()
    ) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text, and the ``(start, end)`` character spans that are learned."""
        t = self.template
        specials = {"bos": self.tokenizer.bos_token or "", "eos": self.tokenizer.eos_token or ""}
        fill = lambda fmt, content="": fmt.format(content=content, **specials)  # noqa: E731
        parts: list[str] = [fill(t.prefix)]
        spans: list[tuple[int, int]] = []
        length = len(parts[0])
        system = next((m.content for m in messages if m.role == "system"), self.system or t.default_system)
        videos = iter(video_groups)
        for i, message in enumerate(m for m in messages if m.role != "system"):
            if i == 0 and system is not None and t.system:
                text = fill(t.system, system)
                parts.append(text)
                length += len(text)
            content = self._expand(message.content, videos)
            if message.role == "user":
                if not t.user_text:
                    content = self._markers_only(content)
                text = fill(t.user, content)
                parts.append(text)
                length += len(text)
            else:
                prefix = fill(t.assistant_prefix)
                learned = content + fill(t.assistant_suffix)
                end = fill(t.assistant_end)
                start = length + len(prefix)
                spans.append((start, start + len(learned)))
                parts += [prefix, learned, end]
                length += len(prefix) + len(learned) + len(end)
        return "".join(parts), spans

    def _expand(self, content: str, videos) -> str:
        v = self.vision

        def replace(match: re.Match) -> str:
            if match.group(0) == IMAGE_PLACEHOLDER:
                return v.image
            groups = next(videos, None)
            if groups is None:
                raise PlaceholderError("more <video> placeholders than videos")
            return v.video_frame_sep.join(v.video.format(index=k + 1) for k in range(groups))

        return _PLACEHOLDER.sub(replace, content)

    def _markers_only(self, content: str) -> str:
        markers = {self.vision.image, self.vision.video}
        pattern = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
        return "".join(re.findall(pattern, content))

    def __call__(
        self,
        messages: Sequence[Message],
        image_tokens: Sequence[int] = (),
        video_tokens: Sequence[Sequence[int]] = (),
    ) -> EncodedConversation:
        text, spans = self.render(messages, [len(v) for v in video_tokens])
        ids, encoding = self._encode(text)
        learned = np.zeros(len(ids), bool)
        for start, end in spans:
            first = _char_to_token(encoding, start, end, step=1)
            last = _char_to_token(encoding, end - 1, start - 1, step=-1)
            if first is not None and last is not None:
                learned[first : last + 1] = True
        repeats = self._repeats(ids, messages, image_tokens, video_tokens)
        ids, learned = np.repeat(ids, repeats), np.repeat(learned, repeats)
        return EncodedConversation(ids, np.where(learned, ids, IGNORE_INDEX))

    def _encode(self, text: str):
        """``tokenizer(text, add_special_tokens=False)``: the ids (int64) and an object with
        ``char_to_token``. Straight from the Rust tokenizer when that is the same call: a fast
        tokenizer whose encoding methods are PreTrainedTokenizerFast's, with no truncation, padding
        or special-token splitting set (what that call sets) -- the wrapper cost 0.25 ms a sample."""
        backend = self._backend
        if (backend is not None and backend.truncation is None and backend.padding is None
                and not backend.encode_special_tokens):
            encoding = backend.encode(text, add_special_tokens=False)
            return np.asarray(encoding.ids, np.int64), encoding
        encoding = self.tokenizer(text, add_special_tokens=False)
        return np.asarray(encoding["input_ids"], np.int64), encoding

    def encode_prompt(
        self,
        messages: Sequence[Message],
        image_tokens: Sequence[int] = (),
        video_tokens: Sequence[Sequence[int]] = (),
    ) -> np.ndarray:
        """``input_ids`` (L,) of ``messages`` (ending with a user turn) followed by the assistant
        prefix: the text generation continues from, rendered as in training."""
        text, _ = self.render(messages, [len(v) for v in video_tokens])
        text += self.template.assistant_prefix.format(bos=self.tokenizer.bos_token or "", eos=self.tokenizer.eos_token or "")
        ids = np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
        return np.repeat(ids, self._repeats(ids, messages, image_tokens, video_tokens))

    def _repeats(self, ids, messages, image_tokens, video_tokens) -> np.ndarray:
        """How often each token of ``ids`` is repeated: its embeddings for context tokens, else 1."""
        repeats = np.ones(len(ids), np.int64)
        context = self._is_context(ids)
        repeats[context] = self._context_counts(context, messages, image_tokens, video_tokens)
        return repeats

    def _is_context(self, ids: np.ndarray) -> np.ndarray:
        """``np.isin(ids, self.context_ids)`` (one comparison per id: np.isin cost 0.15 ms a call)."""
        mask = ids == self.context_ids[0]
        for other in self.context_ids[1:]:
            mask |= ids == other
        return mask

    def _context_counts(self, context, messages, image_tokens, video_tokens) -> np.ndarray:
        """Embeddings per context token, in text order (images and videos interleaved)."""
        images, videos = iter(image_tokens), iter(video_tokens)
        counts = []
        for message in messages:
            if message.role == "system":
                continue
            for placeholder in _PLACEHOLDER.findall(message.content):
                if placeholder == IMAGE_PLACEHOLDER:
                    counts.append(next(images, None))
                else:
                    counts.extend(next(videos, [None]))
        if None in counts or next(images, None) is not None or next(videos, None) is not None:
            raise PlaceholderError(f"{len(counts)} placeholder(s) do not match {len(image_tokens)} image(s) and {len(video_tokens)} video(s)")
        found = int(context.sum())
        if found != len(counts):
            raise PlaceholderError(f"text holds {found} vision context token(s), expected {len(counts)} (a literal context token in the text?)")
        return np.asarray(counts, np.int64)


def _char_to_token(encoding, char: int, stop: int, step: int) -> Optional[int]:
    """The token holding ``char``, moving by ``step`` past characters that no token holds."""
    while char != stop:
        token = encoding.char_to_token(char)
        if token is not None:
            return token
        char += step
    return None
