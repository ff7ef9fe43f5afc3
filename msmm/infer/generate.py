"""Autoregressive generation with a static KV cache for the msmm models.

The prompt (with its images / videos spliced in), padded at the end to a bucket length,
runs once through the decoder, writing every layer's keys and values into caches of fixed
length (at least ``prompt + max_new_tokens``, a multiple of ``CACHE_BUCKET``); each new
token then runs alone, written at its slot, attending over the whole cache under a mask.
All shapes are fixed per bucket: on MindSpore the prompt embeddings (vision included), the
prefill and the decode step are one compiled graph each, serving every prompt whose
length falls in the same buckets.

The loop uses the ``torch`` the model was imported with (real PyTorch, or
``adapters.torch`` through the auto_convert hook). Greedy tokens are the graphs' argmax;
sampling (temperature, top-k, top-p) and the repetition penalty run in numpy on the last
logits, with HF ``generate`` semantics.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False  # False: greedy
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    pad_token_id: int = 0
    seed: Optional[int] = None


def process_logits(logits: np.ndarray, seen: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """Scores [B, V] after repetition penalty, temperature, top-k and top-p (HF order);
    ``seen`` [B, T] are the ids so far. Filtered entries become -inf."""
    scores = logits.astype(np.float64)
    if config.repetition_penalty != 1.0:
        for b in range(scores.shape[0]):
            ids = np.unique(seen[b])
            s = scores[b, ids]
            scores[b, ids] = np.where(s < 0, s * config.repetition_penalty, s / config.repetition_penalty)
    if not config.do_sample:
        return scores
    if config.temperature != 1.0:
        scores = scores / config.temperature
    if config.top_k > 0:
        k = min(config.top_k, scores.shape[-1])
        kth = np.sort(scores, axis=-1)[:, -k][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    if config.top_p < 1.0:
        order = np.argsort(scores, axis=-1)  # ascending
        sorted_scores = np.take_along_axis(scores, order, -1)
        probs = np.exp(sorted_scores - sorted_scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        drop = np.cumsum(probs, -1) <= 1 - config.top_p
        drop[:, -1] = False  # keep at least the best token
        mask = np.zeros_like(drop)
        np.put_along_axis(mask, order, drop, -1)
        scores = np.where(mask, -np.inf, scores)
    return scores


def choose(scores: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> np.ndarray:
    if not config.do_sample:
        return scores.argmax(-1)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


def _torch_of(model: Any):
    """The ``torch`` module the model's file imported (real torch or adapters.torch)."""
    return sys.modules[type(model).__module__].torch


def _numpy(t: Any) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") and hasattr(t, "numpy") else t.asnumpy()


@dataclass
class Prompt:
    """What the decoder needs for the prompt: embeddings with vision spliced in, positions."""

    decoder: Any  # CausalLM-like: .model (DecoderModel), .lm_head
    embeds: Any  # [B, L, H]
    position_ids: np.ndarray  # [B, L] or [3, B, L]
    mrope: bool


def prepare_prompt(model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, padded: Optional[int] = None,
                   **vision: Any) -> Prompt:
    """Prompt embeddings and positions for InternVL, LLaVA, Qwen2-VL / 2.5-VL, or a text CausalLM.
    With ``padded``, the embeddings are of the ids padded at the end to that length (with an id
    that is no vision token); the positions cover the prompt only. Embedding, vision encoder
    and splicing are one graph on MindSpore."""
    torch = _torch_of(model)
    b, l = input_ids.shape
    vision_ids = [getattr(model, "image_token_id", None)]
    if hasattr(model, "visual"):
        vision_ids = [model.config.image_token_id, model.config.video_token_id]
    filler = next(i for i in range(3) if i not in vision_ids)
    ids = torch.tensor(np.pad(input_ids, ((0, 0), (0, (padded or l) - l)), constant_values=filler))
    if hasattr(model, "visual"):  # Qwen2-VL / Qwen2.5-VL
        meta = model.prepare_metadata(input_ids, attention_mask, vision.get("image_grid_thw"),
                                      vision.get("video_grid_thw"), vision.get("second_per_grid_ts"))
        pixels = [vision[k] for k in ("pixel_values", "pixel_values_videos") if vision.get(k) is not None]
        if not pixels:
            return Prompt(model, model.model.embed_tokens(ids), meta["position_ids"], True)
        n_image = 0 if vision.get("pixel_values") is None else vision["pixel_values"].shape[0] // model.visual.merge_unit
        embed = _graph(model, "embed_prompt", _qwen_embeds(model, torch), torch)
        embeds = embed(ids, torch.tensor(np.concatenate(pixels, 0)),
                       tuple(torch.tensor(meta[k]) if k in meta else None for k in (
                           "vision_position_ids", "vision_segment_ids", "vision_window_segment_ids",
                           "vision_window_index", "vision_reverse_index")),
                       n_image, vision.get("pixel_values") is not None, vision.get("pixel_values_videos") is not None)
        return Prompt(model, embeds, meta["position_ids"], True)
    if hasattr(model, "language_model"):  # InternVL, LLaVA
        decoder = model.language_model
        if vision.get("pixel_values") is not None:
            flags = vision.get("image_flags")
            embeds = _graph(model, "embed_prompt", _tile_embeds(model), torch)(
                ids, torch.tensor(vision["pixel_values"]), None if flags is None else torch.tensor(flags))
        else:
            embeds = decoder.model.embed_tokens(ids)
    else:  # a text CausalLM
        decoder, embeds = model, model.model.embed_tokens(ids)
    positions = np.maximum(np.cumsum(attention_mask, -1) - 1, 0)  # HF: left padding starts at 0
    return Prompt(decoder, embeds, positions.astype(np.int64), False)


def _qwen_embeds(model: Any, torch: Any) -> Callable:
    """Qwen2-VL / 2.5-VL: token embeddings with the ViT's image then video features spliced in."""
    splice = sys.modules[type(model).__module__].splice

    def embed(ids, pixels, meta, n_image, has_image, has_video):
        embeds = model.model.embed_tokens(ids)
        features = model.visual(pixels, *meta)
        if has_image:
            embeds = splice(embeds, ids == model.config.image_token_id, features, 0)
        if has_video:
            embeds = splice(embeds, ids == model.config.video_token_id, features, n_image)
        return embeds

    return embed


def _tile_embeds(model: Any) -> Callable:
    """InternVL, LLaVA: token embeddings with the image features spliced in."""
    splice_features = sys.modules[type(model).__module__].splice_features

    def embed(ids, pixels, flags):
        embeds = model.language_model.model.embed_tokens(ids)
        return splice_features(embeds, ids == model.image_token_id, model.image_features(pixels), flags)

    return embed


CACHE_BUCKET = 64  # cache lengths are rounded up to a multiple: one compiled decode step serves many prompts
PROMPT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)  # prompts are padded to one of these (then multiples of 1024)
# (id(owner), name) -> (owner, graph). Both live as long as the process: MindSpore caches
# compiled graphs by the callable's id(), and a freed callable's id reused by a new one would
# find its graph.
_GRAPHS: Dict[Tuple[int, str], Tuple[Any, Callable]] = {}


def prompt_bucket(length: int) -> int:
    """The padded prompt length: the smallest bucket that holds ``length``."""
    for bucket in PROMPT_BUCKETS:
        if length <= bucket:
            return bucket
    return -(-length // PROMPT_BUCKETS[-1]) * PROMPT_BUCKETS[-1]


def _graph(owner: Any, name: str, fn: Callable, torch: Any, mutable_at: Optional[int] = None) -> Callable:
    """``fn`` as one ``mindspore.jit`` graph when ``torch`` is adapters.torch (compiled on
    first use per input shapes, kept alive with ``owner``), else ``fn`` itself. Argument
    ``mutable_at`` (the KV caches) goes in as ``mindspore.mutable``: a plain tuple of the
    previous call's outputs is taken for new constants and the graph recompiles every call."""
    key = (id(owner), name)
    if key in _GRAPHS:
        return _GRAPHS[key][1]
    if torch.__name__.startswith("adapters"):
        import mindspore

        jitted = mindspore.jit(fn)

        def fn(*args):
            if mutable_at is not None:
                args = args[:mutable_at] + (mindspore.mutable(args[mutable_at]),) + args[mutable_at + 1:]
            return jitted(*args)

    _GRAPHS[key] = (owner, fn)
    return fn


def prefill_step(decoder: Any, torch: Any) -> Callable:
    """``prefill(embeds [B, Lp, H], position [B, Lp] | [3, B, Lp], mask [B, Lmax], caches,
    slots [Lp, Lmax], last [1]) -> (logits [B, V] float32, greedy token [B, 1], caches)``:
    the prompt through the decoder, writing cache slots ``0..Lp-1``; logits of position
    ``last``. The prompt is padded at the end to a bucket length ``Lp`` (``prompt_bucket``):
    the padding's keys land in slots that each new token overwrites before it attends to
    them, so the result is exact and one graph per (Lp, Lmax) serves all prompt lengths."""

    def prefill(embeds, position, mask, caches, slots, last):
        hidden, caches = decoder.model(inputs_embeds=embeds, position_ids=position, attention_mask=mask,
                                       caches=caches, slots=slots)
        logits = decoder.lm_head(torch.index_select(hidden, 1, last)).float()[:, -1]
        return logits, torch.argmax(logits, -1, keepdim=True), caches

    return _graph(decoder, "prefill", prefill, torch, 3)


def decode_step(decoder: Any, torch: Any) -> Callable:
    """``step(token [B, 1], position [B, 1] | [3, B, 1], index [1], mask [B, Lmax], caches)
    -> (logits [B, V] float32, greedy token [B, 1], position + 1, index + 1, caches)``: embed
    one token per row, write it at cache slot ``index``, run it through the decoder over the
    cache, project the last hidden state and take its argmax. The outputs feed the next call
    as they are (no host round trip for positions, slots or greedy tokens). On MindSpore
    (``torch`` is adapters.torch) the whole step is one graph."""

    def step(token, position, index, mask, caches):
        slot = (torch.arange(mask.shape[1]) == index).float().unsqueeze(0)  # [1, Lmax] one-hot
        embeds = decoder.model.embed_tokens(token)
        hidden, caches = decoder.model(inputs_embeds=embeds, position_ids=position, attention_mask=mask,
                                       caches=caches, slots=slot)
        logits = decoder.lm_head(hidden).float()[:, -1]
        return logits, torch.argmax(logits, -1, keepdim=True), position + 1, index + 1, caches

    return _graph(decoder, "decode", step, torch, 4)


def _on_host(config: GenerationConfig) -> bool:
    """Whether tokens are chosen on the host from the logits (else: the graph's argmax)."""
    return config.do_sample or config.repetition_penalty != 1.0


def generate_stream(model: Any, input_ids: np.ndarray, attention_mask: Optional[np.ndarray] = None,
                    config: GenerationConfig = GenerationConfig(), **vision: Any) -> Iterator[np.ndarray]:
    """Yields the next token ids [B] one step at a time (rows that stopped yield pad)."""
    torch = _torch_of(model)
    input_ids = np.asarray(input_ids, np.int64)
    b, l = input_ids.shape
    attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
    rng = np.random.default_rng(config.seed)
    on_host = _on_host(config)
    stop = np.asarray(list(config.stop_token_ids), np.int64)
    padded = prompt_bucket(l)
    # slots past prompt + max_new_tokens stay zero or hold the prompt padding's keys, and are
    # never attended before a new token overwrites them (causal over slots)
    total = -(-max(padded, l + config.max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET
    with torch.no_grad():
        prompt = prepare_prompt(model, input_ids, attention_mask, padded, **vision)
        decoder = prompt.decoder
        cfg = decoder.model.layers[0].self_attn
        groups, head_dim = cfg.num_groups, cfg.head_dim
        dtype = prompt.embeds.dtype
        caches = tuple((torch.zeros(b, groups, total, head_dim, dtype=dtype),
                        torch.zeros(b, groups, total, head_dim, dtype=dtype)) for _ in decoder.model.layers)
        mask = torch.tensor(np.concatenate([attention_mask, np.ones((b, total - l), np.int64)], 1))
        # the next position of each row: after the largest prompt position (over all three
        # M-RoPE components: new tokens share one position in all three)
        last = prompt.position_ids.max(axis=(0, 2) if prompt.mrope else -1)  # [B]
        next_pos = np.broadcast_to(last + 1, (3, b)) if prompt.mrope else last + 1
        # the padding continues the positions; its outputs are dropped
        positions = np.concatenate([prompt.position_ids, next_pos[..., None] + np.arange(padded - l)], -1)
        logits, greedy, caches = prefill_step(decoder, torch)(
            prompt.embeds, torch.tensor(positions.astype(np.int64)), mask, caches,
            torch.tensor(np.eye(total, dtype=np.float32)[:padded]), torch.tensor(np.array([l - 1], np.int64)))
        step_fn = decode_step(decoder, torch)
        seen = input_ids
        done = np.zeros(b, bool)
        token = choose(process_logits(_numpy(logits), seen, config), config, rng) if on_host else _numpy(greedy)[:, 0]
        position = torch.tensor(np.ascontiguousarray(next_pos[..., None]).astype(np.int64))  # [B, 1] | [3, B, 1]
        index = torch.tensor(np.array([l], np.int64))
        fed = torch.tensor(token[:, None].astype(np.int64)) if on_host else greedy
        for step in range(config.max_new_tokens):
            token = np.where(done, config.pad_token_id, token)
            done |= np.isin(token, stop)
            yield token
            if done.all() or step + 1 == config.max_new_tokens:
                return
            logits, greedy, position, index, caches = step_fn(fed, position, index, mask, caches)
            if on_host:
                seen = np.concatenate([seen, token[:, None]], 1)
                token = choose(process_logits(_numpy(logits), seen, config), config, rng)
                fed = torch.tensor(token[:, None].astype(np.int64))
            else:  # greedy: the graph's argmax is the next token and goes back in as it is
                fed = greedy
                token = _numpy(greedy)[:, 0]


def generate(model: Any, input_ids: np.ndarray, attention_mask: Optional[np.ndarray] = None,
             config: GenerationConfig = GenerationConfig(), **vision: Any) -> np.ndarray:
    """New token ids [B, T] (T <= max_new_tokens; rows that stopped early are padded)."""
    steps = list(generate_stream(model, input_ids, attention_mask, config, **vision))
    return np.stack(steps, 1) if steps else np.zeros((len(input_ids), 0), np.int64)
