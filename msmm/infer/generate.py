"""Autoregressive generation with a static KV cache for the msmm models.

The prompt (with its images / videos spliced in), padded at the end to a bucket length,
runs once through the decoder, writing every layer's keys and values into caches of fixed
length (at least ``prompt + max_new_tokens``, a multiple of ``CACHE_BUCKET``); each new
token then runs alone, written at its slot, attending over the whole cache under a mask.
All shapes are fixed per bucket: on MindSpore the prompt embeddings (vision included), the
prefill and the decode step are one compiled graph each, serving every prompt whose
length falls in the same buckets.

Generation calls model methods only: ``vision_token_ids``, ``embedding_inputs`` and
``embed_inputs`` (the prompt embeddings with the vision features spliced in, as ``forward``
computes them), ``prompt_position_ids`` (1D, or M-RoPE [3, B, L]) and ``get_decoder()``,
whose ``init_kv_cache``, ``get_input_embeddings`` and ``forward_with_cache`` run the prefill
and the decode steps. A text ``CausalLM`` and the VLMs of ``msmm.models`` have them all.

The loop uses the ``torch`` the model was imported with (real PyTorch, or
``adapters.torch`` through the auto_convert hook). Greedy tokens are the graphs' argmax;
sampling (temperature, top-k, top-p) and the repetition penalty run in numpy on the last
logits, with HF ``generate`` semantics.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from msmm import runtime


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


def torch_of(model: Any) -> ModuleType:
    """The ``torch`` the model is built on: ``adapters.torch`` for a model of MindSpore Cells
    (its file imported through the auto_convert hook), else real PyTorch."""
    on_adapters = any(cls.__module__.startswith("adapters.torch") for cls in type(model).__mro__)
    return importlib.import_module("adapters.torch" if on_adapters else "torch")


def _numpy(t: Any) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") and hasattr(t, "numpy") else t.asnumpy()


@dataclass
class Prompt:
    """What the decoder needs for the prompt: embeddings with vision spliced in, positions."""

    decoder: Any  # the model's get_decoder(): forward_with_cache, init_kv_cache, get_input_embeddings
    embeds: Any  # [B, L, H]
    position_ids: np.ndarray  # [B, L] or [3, B, L] (M-RoPE)
    mrope: bool


def prepare_prompt(model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, padded: Optional[int] = None,
                   **vision: Any) -> Prompt:
    """Prompt embeddings (``model.embed_inputs``) and positions (``model.prompt_position_ids``)
    for InternVL, LLaVA, Qwen2-VL / 2.5-VL, or a text CausalLM. With ``padded``, the
    embeddings are of the ids padded at the end to that length (with an id that is no vision
    token); the positions cover the prompt only. With vision inputs, embedding, vision encoder
    and splicing are one graph on MindSpore (one per set of vision input names)."""
    torch = torch_of(model)
    b, l = input_ids.shape
    filler = next(i for i in range(3) if i not in model.vision_token_ids)
    ids = torch.tensor(np.pad(input_ids, ((0, 0), (0, (padded or l) - l)), constant_values=filler))
    inputs = model.embedding_inputs(**vision)
    if inputs:
        keys = tuple(inputs)

        def embed(ids, *tensors):
            kwargs = {}
            for key, tensor in zip(keys, tensors):
                kwargs[key] = tensor
            return model.embed_inputs(ids, **kwargs)

        embed = _graph(model, f"embed_inputs({', '.join(keys)})", embed, torch)
        embeds = embed(ids, *(torch.tensor(inputs[k]) for k in keys))
    else:
        embeds = model.embed_inputs(ids)
    positions = model.prompt_position_ids(input_ids, attention_mask, **vision)
    return Prompt(model.get_decoder(), embeds, positions, positions.ndim == 3)


CACHE_BUCKET = 64  # cache lengths are rounded up to a multiple: one compiled decode step serves many prompts
PROMPT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)  # prompts are padded to one of these (then multiples of 1024)
# (id(owner), name) -> (owner, graph): one graph per model and step, found again by the owner's
# id(), so the owner lives as long as the process too (a freed model's id reused by a new one
# would find its graph; runtime.jit keeps the compiled callables themselves).
_GRAPHS: Dict[Tuple[int, str], Tuple[Any, Callable]] = {}


def prompt_bucket(length: int) -> int:
    """The padded prompt length: the smallest bucket that holds ``length``."""
    for bucket in PROMPT_BUCKETS:
        if length <= bucket:
            return bucket
    return -(-length // PROMPT_BUCKETS[-1]) * PROMPT_BUCKETS[-1]


def _graph(owner: Any, name: str, fn: Callable, torch: Any, mutable_at: Optional[int] = None) -> Callable:
    """``fn`` as one ``mindspore.jit`` graph (``runtime.jit``) when ``torch`` is adapters.torch
    (compiled on first use per input shapes, kept alive with ``owner``), else ``fn`` itself. Argument
    ``mutable_at`` (the KV caches) goes in as ``mindspore.mutable``: a plain tuple of the
    previous call's outputs is taken for new constants and the graph recompiles every call."""
    key = (id(owner), name)
    if key in _GRAPHS:
        return _GRAPHS[key][1]
    if torch.__name__.startswith("adapters"):
        import mindspore

        jitted = runtime.jit(fn)

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
        logits, caches = decoder.forward_with_cache(embeds, position, mask, caches, slots, last)
        return logits, torch.argmax(logits, -1, keepdim=True), caches

    return _graph(decoder, "prefill", prefill, torch, 3)


def decode_step(decoder: Any, torch: Any) -> Callable:
    """``step(token [B, 1], position [B, 1] | [3, B, 1], index [B], mask [B, Lmax], caches)
    -> (logits [B, V] float32, greedy token [B, 1], position + 1, index + 1, caches)``: embed
    one token per row, write it at the row's cache slot ``index`` (rows may be at different
    slots: continuous batching), run it through the decoder over the cache, project the last
    hidden state and take its argmax. The outputs feed the next call as they are (no host
    round trip for positions, slots or greedy tokens). On MindSpore (``torch`` is
    adapters.torch) the whole step is one graph."""

    def step(token, position, index, mask, caches):
        slot = (torch.arange(mask.shape[1]).unsqueeze(0) == index.unsqueeze(1)).float().unsqueeze(1)  # [B, 1, Lmax]
        logits, caches = decoder.forward_with_cache(decoder.get_input_embeddings()(token), position, mask, caches, slot)
        return logits, torch.argmax(logits, -1, keepdim=True), position + 1, index + 1, caches

    return _graph(decoder, "decode", step, torch, 4)


def _on_host(config: GenerationConfig) -> bool:
    """Whether tokens are chosen on the host from the logits (else: the graph's argmax)."""
    return config.do_sample or config.repetition_penalty != 1.0


def cache_length(prompt_length: int, max_new_tokens: int) -> int:
    """The KV-cache length for a prompt and ``max_new_tokens``: at least the padded prompt and
    every new token, rounded up to a multiple of ``CACHE_BUCKET``."""
    return -(-max(prompt_bucket(prompt_length), prompt_length + max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET


@dataclass
class Prefilled:
    """The state after the prompt: what the first decode step starts from."""

    decoder: Any
    logits: Any  # [B, V] float32 of the last prompt position
    greedy: Any  # [B, 1] its argmax
    caches: Any  # per layer (keys, values) [B, G, total, D]
    next_position: np.ndarray  # [B] or [3, B] (M-RoPE): the position of the first new token


def prefill(model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, total: int, **vision: Any) -> Prefilled:
    """The prompt (padded at the end to its bucket) through the model, into fresh KV caches of
    length ``total`` (cache slots ``0..L-1`` hold the prompt)."""
    torch = torch_of(model)
    b, l = input_ids.shape
    padded = prompt_bucket(l)
    prompt = prepare_prompt(model, input_ids, attention_mask, padded, **vision)
    decoder = prompt.decoder
    caches = decoder.init_kv_cache(b, total, prompt.embeds.dtype)
    # slots past the prompt hold the prompt padding's keys or zeros, and are never attended
    # before a new token overwrites them (causal over slots)
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
    return Prefilled(decoder, logits, greedy, caches, np.ascontiguousarray(next_pos).astype(np.int64))


def generate_stream(model: Any, input_ids: np.ndarray, attention_mask: Optional[np.ndarray] = None,
                    config: GenerationConfig = GenerationConfig(), **vision: Any) -> Iterator[np.ndarray]:
    """Yields the next token ids [B] one step at a time (rows that stopped yield pad)."""
    torch = torch_of(model)
    input_ids = np.asarray(input_ids, np.int64)
    b, l = input_ids.shape
    attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
    rng = np.random.default_rng(config.seed)
    on_host = _on_host(config)
    stop = np.asarray(list(config.stop_token_ids), np.int64)
    total = cache_length(l, config.max_new_tokens)
    with torch.no_grad():
        state = prefill(model, input_ids, attention_mask, total, **vision)
        logits, greedy, caches = state.logits, state.greedy, state.caches
        mask = torch.tensor(np.concatenate([attention_mask, np.ones((b, total - l), np.int64)], 1))
        step_fn = decode_step(state.decoder, torch)
        seen = input_ids
        done = np.zeros(b, bool)
        token = choose(process_logits(_numpy(logits), seen, config), config, rng) if on_host else _numpy(greedy)[:, 0]
        position = torch.tensor(state.next_position[..., None])  # [B, 1] | [3, B, 1]
        index = torch.tensor(np.full(b, l, np.int64))
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
