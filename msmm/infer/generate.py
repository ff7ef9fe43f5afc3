"""Autoregressive generation with a static KV cache for the msmm models.

The prompt (with its images / videos spliced in), padded at the end to a bucket length,
runs once through the decoder, writing every layer's keys and values into caches of fixed
length (at least ``prompt + max_new_tokens``, a multiple of ``CACHE_BUCKET``); each new
token then runs alone, written at its slot, attending over the whole cache under a mask.
All shapes are fixed per bucket: on MindSpore the prompt embeddings (vision included), the
prefill and a block of decode steps are one compiled graph each, serving every prompt whose
length falls in the same buckets.

Generation calls model methods only: ``vision_token_ids``, ``embedding_inputs`` and
``embed_inputs`` (the prompt embeddings with the vision features spliced in, as ``forward``
computes them), ``prompt_position_ids`` (1D, or M-RoPE [3, B, L]) and ``get_decoder()``,
whose ``init_kv_cache``, ``get_input_embeddings`` and ``forward_with_cache`` run the prefill
and the decode steps. A text ``CausalLM`` and the VLMs of ``msmm.models`` have them all.

The loop uses the ``torch`` the model was imported with (real PyTorch, or
``adapters.torch`` through the auto_convert hook). Tokens are chosen inside the graphs
(``sampling``: greedy argmax, or temperature / top-k / top-p sampling, after the repetition
penalty, with HF ``generate`` semantics) and fed to the next step there: one graph call runs
``steps_per_call`` decode steps, and only token ids come back to the host, which applies the
stop tokens per row. ``process_logits`` / ``choose`` are the same choice in numpy, for
msmm-serve's per-request settings.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from msmm import runtime

from . import sampling


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


def decode_block(decoder: Any, torch: Any, steps: int, do_sample: bool, penalize: bool) -> Callable:
    """``block(token [B, 1], position [B, 1] | [3, B, 1], index [B], mask [B, Lmax], seen [B, V],
    controls [4], uniforms [B, steps], caches) -> (tokens [B, steps], the last token [B, 1],
    position + steps, index + steps, seen, caches)``: ``steps`` decode steps in one call (one
    graph on MindSpore, the steps unrolled), each token chosen on the device (``sampling``: the
    argmax, or drawn with ``controls`` and the step's ``uniforms``; with ``penalize`` the
    repetition penalty over ``seen`` first, and the token marked in it) and fed to the next
    step. Only the ids leave the graph; a row that meets a stop token runs on, and the caller
    drops its tokens after the stop (rows are independent: the other rows' tokens are as if
    it had stopped)."""

    def block(token, position, index, mask, seen, controls, uniforms, caches):
        slots = torch.arange(mask.shape[1]).unsqueeze(0)
        embed = decoder.get_input_embeddings()
        tokens = ()
        for i in range(steps):
            slot = (slots == index.unsqueeze(1)).float().unsqueeze(1)  # [B, 1, Lmax]
            logits, caches = decoder.forward_with_cache(embed(token), position, mask, caches, slot)
            # rebuilt as a fresh tuple: MindSpore (2.10) mis-indexes the nested tuple a cell call
            # returns when the next unrolled call takes it as it is
            caches = tuple((kv[0], kv[1]) for kv in caches)
            if penalize:
                logits = sampling.penalize(torch, logits, seen, controls[3])
            if do_sample:
                token = sampling.sample(torch, logits, controls, uniforms[:, i])
            else:
                token = torch.argmax(logits, -1, keepdim=True)
            if penalize:
                seen = sampling.mark_seen(torch, seen, token)
            tokens = tokens + (token,)
            position, index = position + 1, index + 1
        return torch.cat(tokens, 1), token, position, index, seen, caches

    return _graph(decoder, f"decode_block({steps}, sample={do_sample}, penalize={penalize})", block, torch, 7)


def first_token_step(decoder: Any, torch: Any, do_sample: bool, penalize: bool) -> Callable:
    """``pick(logits [B, V], seen [B, V], controls [4], uniform [B]) -> (token [B, 1], seen)``:
    the prompt's next token chosen as ``decode_block`` chooses (one small graph on MindSpore)."""

    def pick(logits, seen, controls, uniform):
        if penalize:
            logits = sampling.penalize(torch, logits, seen, controls[3])
        if do_sample:
            token = sampling.sample(torch, logits, controls, uniform)
        else:
            token = torch.argmax(logits, -1, keepdim=True)
        if penalize:
            seen = sampling.mark_seen(torch, seen, token)
        return token, seen

    return _graph(decoder, f"first_token(sample={do_sample}, penalize={penalize})", pick, torch)


def _on_host(config: GenerationConfig) -> bool:
    """Whether msmm-serve chooses a request's tokens on the host from the logits (else: the
    graph's argmax)."""
    return config.do_sample or config.repetition_penalty != 1.0


STEPS_PER_CALL = 8  # decode steps per graph call when tokens are not streamed (generate)


def steps_per_call(streaming: bool) -> int:
    """How many decode steps one graph call runs: the one place that chooses. A streamed answer
    (msmm-infer, msmm-chat) takes 1, so each token shows as soon as it exists; ``generate``
    takes ``STEPS_PER_CALL`` (fewer graph launches and host round trips). msmm-serve runs
    ``decode_step`` (rows join and leave between steps)."""
    return 1 if streaming else STEPS_PER_CALL


def cache_length(prompt_length: int, max_new_tokens: int, steps: int = 1) -> int:
    """The KV-cache length for a prompt and ``max_new_tokens`` decoded ``steps`` per call: at
    least the padded prompt, the prompt and the new tokens, and every slot the decode calls
    write (one per step; the last call may run past ``max_new_tokens``), rounded up to a
    multiple of ``CACHE_BUCKET``."""
    written = -(-max(max_new_tokens - 1, 0) // steps) * steps  # the first new token comes from the prefill
    needed = prompt_length + max(max_new_tokens, written)
    return -(-max(prompt_bucket(prompt_length), needed) // CACHE_BUCKET) * CACHE_BUCKET


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
                    config: GenerationConfig = GenerationConfig(), steps: Optional[int] = None,
                    **vision: Any) -> Iterator[np.ndarray]:
    """Yields the next token ids [B] one at a time (rows that stopped yield pad). ``steps``
    decode steps run per graph call (default ``steps_per_call(streaming=True)``): a call's
    tokens are yielded together when it returns."""
    if config.max_new_tokens < 1:
        return
    torch = torch_of(model)
    steps = steps or steps_per_call(streaming=True)
    input_ids = np.asarray(input_ids, np.int64)
    b, l = input_ids.shape
    attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
    rng = np.random.default_rng(config.seed)
    penalize = config.repetition_penalty != 1.0
    stop = np.asarray(list(config.stop_token_ids), np.int64)
    total = cache_length(l, config.max_new_tokens, steps)
    with torch.no_grad():
        state = prefill(model, input_ids, attention_mask, total, **vision)
        vocab = state.logits.shape[-1]
        controls = torch.tensor(sampling.controls(config))
        seen = torch.tensor(sampling.presence(input_ids, vocab) if penalize else np.zeros((b, 1), np.float32))
        if config.do_sample or penalize:
            pick = first_token_step(state.decoder, torch, config.do_sample, penalize)
            fed, seen = pick(state.logits, seen, controls, torch.tensor(rng.random(b, np.float32)))
        else:
            fed = state.greedy
        tokens = _numpy(fed)
        mask = torch.tensor(np.concatenate([attention_mask, np.ones((b, total - l), np.int64)], 1))
        block = decode_block(state.decoder, torch, steps, config.do_sample, penalize)
        position = torch.tensor(state.next_position[..., None])  # [B, 1] | [3, B, 1]
        index = torch.tensor(np.full(b, l, np.int64))
        caches, no_uniforms = state.caches, torch.tensor(np.zeros((b, steps), np.float32))
        done = np.zeros(b, bool)
        produced = 0
        while True:
            for token in tokens.T:
                token = np.where(done, config.pad_token_id, token)
                done |= np.isin(token, stop)
                produced += 1
                yield token
                if done.all() or produced == config.max_new_tokens:
                    return
            # drawn step by step (each step a number per row): the same tokens whatever the steps per call
            uniforms = torch.tensor(rng.random((steps, b), np.float32).T.copy()) if config.do_sample else no_uniforms
            out, fed, position, index, seen, caches = block(fed, position, index, mask, seen, controls, uniforms,
                                                            caches)
            tokens = _numpy(out)


def generate(model: Any, input_ids: np.ndarray, attention_mask: Optional[np.ndarray] = None,
             config: GenerationConfig = GenerationConfig(), **vision: Any) -> np.ndarray:
    """New token ids [B, T] (T <= max_new_tokens; rows that stopped early are padded)."""
    steps = list(generate_stream(model, input_ids, attention_mask, config, steps_per_call(streaming=False), **vision))
    return np.stack(steps, 1) if steps else np.zeros((len(input_ids), 0), np.int64)
