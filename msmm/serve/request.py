"""``POST /v1/chat/completions`` bodies -> a checked ``ChatRequest``; each bad field is an
``APIError`` (400, or 404 for an unknown model) naming it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..infer.generate import GenerationConfig, prompt_bucket
from .errors import APIError, bad_request
from .media import MediaLimits, load_image, load_video
from .prompt import ChatPrompt, ChatPromptBuilder, Part

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
UNSUPPORTED = ("logprobs", "top_logprobs", "tools", "functions", "response_format", "logit_bias")  # 400 when asked for


@dataclass
class Limits:
    """What one request may ask for."""

    context: int  # prompt + max_tokens (the KV-cache slot length)
    default_max_tokens: int = 256
    max_images: int = 8
    media: MediaLimits = field(default_factory=MediaLimits)


@dataclass
class ChatRequest:
    prompt: ChatPrompt
    generation: GenerationConfig
    stop: List[str]  # stop strings
    stream: bool
    include_usage: bool  # stream_options.include_usage


def _number(body: Dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise bad_request(f"{key} must be a number in [{low}, {high}], got {value!r}", key)
    return float(value)


def _integer(body: Dict[str, Any], key: str, low: int) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_request(f"{key} must be an integer >= {low}, got {value!r}", key)
    return value


def parse_messages(messages: Any, limits: Limits, build: ChatPromptBuilder) -> List[Tuple[str, List[Part]]]:
    """(role, parts) per message; images and videos decoded."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages is required: a non-empty list of {role, content}", "messages")
    out, images = [], 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"{where}: expected {{role: one of {list(ROLES)}, content}}", where)
        content = message.get("content")
        if isinstance(content, str):
            out.append((message["role"], [content]))
            continue
        if not isinstance(content, list):
            raise bad_request(f"{where}.content must be a string or a list of parts", f"{where}.content")
        parts: List[Part] = []
        for j, part in enumerate(content):
            param = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind in ("image_url", "video_url"):
                if message["role"] != "user":
                    raise bad_request(f"{param}: images and videos are taken in user messages only", param)
                if kind == "video_url" and build.frames is None:
                    raise bad_request(f"{param}: this model takes no video", param, "video_not_supported")
                url = part.get(kind)
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise bad_request(f"{param}.{kind}.url must be a string", f"{param}.{kind}")
                images += 1
                if images > limits.max_images:
                    raise bad_request(f"more than {limits.max_images} images and videos in one request", param,
                                      "too_many_images")
                parts.append(load_image(url, limits.media, f"{param}.{kind}") if kind == "image_url"
                             else load_video(url, limits.media, f"{param}.{kind}", build.frames))
            else:
                raise bad_request(f"{param}: expected {{type: 'text', text}}, {{type: 'image_url', image_url: "
                                  "{url}} or {type: 'video_url', video_url: {url}}", param)
        out.append((message["role"], parts))
    if out[-1][0] != "user":
        raise bad_request("the last message must be a user message", f"messages[{len(out) - 1}].role")
    return out


def _stop_strings(body: Dict[str, Any]) -> List[str]:
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings", "stop")
    return stop


def parse_request(body: Any, model_names: Sequence[str], build: ChatPromptBuilder, limits: Limits) -> ChatRequest:
    """The checked request; images are decoded and the prompt is built (the slow part: run it
    off the event loop)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model not in model_names:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {list(model_names)}", "model",
                       "model_not_found")
    if body.get("n", 1) != 1:
        raise bad_request("n must be 1", "n")
    for key in UNSUPPORTED:
        if body.get(key) not in (None, False, [], {"type": "text"}):
            raise bad_request(f"{key} is not supported by msmm-serve", key, "unsupported_parameter")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, key, 1)
    if max_tokens is not None and max_tokens >= limits.context:
        raise bad_request(f"{key} {max_tokens} is more than this server's context of {limits.context} tokens", key)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise bad_request("top_p must be > 0", "top_p")
    top_k = _integer(body, "top_k", -1)
    repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.0, 10.0)
    if repetition_penalty == 0:
        raise bad_request("repetition_penalty must be > 0", "repetition_penalty")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request(f"seed must be an integer, got {seed!r}", "seed")
    stop = _stop_strings(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    messages = parse_messages(body.get("messages"), limits, build)
    try:
        prompt = build(messages)
    except ValueError as err:
        raise bad_request(str(err), "messages") from None
    length = prompt.input_ids.shape[1]
    room = limits.context - length
    # the prompt is padded to its bucket in the cache slot too
    if room < 1 or (max_tokens is not None and max_tokens > room) or prompt_bucket(length) > limits.context:
        images = f" ({prompt.vision_tokens} of them for images and videos)" if prompt.vision_tokens else ""
        raise bad_request(f"the prompt is {length} tokens{images}; with {key} {max_tokens or 1} that is more than this "
                          f"server's context of {limits.context} tokens", "messages", "context_length_exceeded")
    generation = GenerationConfig(
        max_new_tokens=max_tokens or min(limits.default_max_tokens, room), do_sample=temperature > 0,
        temperature=temperature or 1.0, top_k=max(top_k or 0, 0), top_p=top_p, repetition_penalty=repetition_penalty,
        stop_token_ids=tuple(build.stop_token_ids), seed=seed)
    return ChatRequest(prompt, generation, stop, stream, bool(options.get("include_usage")))
