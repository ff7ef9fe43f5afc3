"""Continuous batching over a fixed number of KV-cache slots with static shapes.

The engine owns one KV cache of ``slots`` rows, each ``max_len`` long, and runs in its own
thread. A request waits in a queue until a row is free; then its prompt runs alone through
``msmm.infer.generate.prefill`` into a fresh one-row cache of the same length, which is
copied into the free row (one graph). Every decode step then runs all rows at once
(``generate.decode_step`` with a cache slot and position per row): a row's request joins and
leaves at step granularity, and the shapes never change, so on MindSpore one compiled decode
graph serves the server's whole life (one prefill graph per prompt bucket). Free rows run
along on dummy inputs and are ignored.

Tokens are chosen as ``generate`` chooses them: the graph's argmax for greedy requests, else
``process_logits`` / ``choose`` on the host with the request's own settings and random stream.
Each request hears of its tokens and its end through its ``emit`` callback (called in the
engine thread).
"""
from __future__ import annotations

import collections
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional

import numpy as np

from ..infer.generate import (GenerationConfig, _graph, _numpy, _on_host, choose, decode_step, prefill, process_logits,
                              torch_of)


class QueueFull(Exception):
    """The waiting queue is at its limit."""


@dataclass
class Event:
    """``token``: a generated id that is no stop token; at the end ``finish`` is "stop" (a stop
    token), "length" (max_new_tokens), "cancelled" or "error" (``error`` says why), and
    ``generated`` counts every token the model produced (stop token included)."""

    token: Optional[int] = None
    finish: Optional[str] = None
    generated: int = 0
    error: Optional[str] = None


@dataclass(eq=False)
class Job:
    input_ids: np.ndarray  # [1, L]
    vision: Dict[str, np.ndarray]
    config: GenerationConfig
    emit: Callable[[Event], None]
    cancelled: Optional[str] = None  # why the request ends early: "cancelled" (client gone), "stop" (a stop string)
    # the engine's
    rng: Any = None
    seen: List[int] = field(default_factory=list)
    generated: int = 0


@dataclass
class Row:
    job: Job
    token: int  # the next input token
    position: np.ndarray  # [1] or [3] (M-RoPE)
    index: int  # its cache slot


class Stats:
    """Counters for /metrics."""

    def __init__(self) -> None:
        self.finished: Dict[str, int] = collections.Counter()
        self.prompt_tokens = self.generation_tokens = self.decode_steps = self.busy_row_steps = 0


class BatchEngine:
    """A model serving ``slots`` requests at once with caches of ``max_len`` tokens; at most
    ``max_queue`` more wait."""

    def __init__(self, model: Any, slots: int, max_len: int, max_queue: int) -> None:
        self.model, self.slots, self.max_len, self.max_queue = model, slots, max_len, max_queue
        self.torch = torch_of(model)
        self.decoder = model.get_decoder()
        self.rows: List[Optional[Row]] = [None] * slots
        self.waiting: Deque[Job] = collections.deque()
        self.stats = Stats()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.mrope = False

    # ---- the caller's side (any thread)

    def start(self) -> None:
        """Allocates the cache, compiles the graphs on a dummy request, starts the thread."""
        torch = self.torch
        with torch.no_grad():
            self.caches = self.decoder.init_kv_cache(self.slots, self.max_len, self._dtype())
        self.mask = torch.tensor(np.ones((self.slots, self.max_len), np.int64))
        self.step = decode_step(self.decoder, torch)
        self.insert = insert_row_step(self.decoder, torch)
        filler = next(i for i in range(3) if i not in self.model.vision_token_ids)
        events: List[Event] = []
        self._admit(Job(np.full((1, 4), filler, np.int64), {}, GenerationConfig(max_new_tokens=2), events.append), 0)
        self._decode()
        failed = [e.error for e in events if e.error is not None]
        if failed:
            raise RuntimeError(f"the warm-up request failed: {failed[0]}")
        self.stats = Stats()
        self._thread = threading.Thread(target=self._loop, name="msmm-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queues ``job``; ``QueueFull`` past the limit."""
        with self._cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already (--max-queue {self.max_queue})")
            self.waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Ends ``job`` at the next step (its row is freed), or drops it from the queue;
        ``reason`` is its finish in the metrics."""
        with self._cond:
            job.cancelled = job.cancelled or reason
            if job in self.waiting:
                self.waiting.remove(job)
                self._finish(job, job.cancelled)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def busy_rows(self) -> int:
        return sum(row is not None for row in self.rows)

    # ---- the engine thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.waiting and not any(self.rows):
                    self._cond.wait()
                if self._stopping:
                    return
                free = [r for r, row in enumerate(self.rows) if row is None]
                admitted = []
                while free and self.waiting:
                    admitted.append((self.waiting.popleft(), free.pop(0)))
            try:
                for job, r in admitted:
                    self._admit(job, r)
                if any(self.rows):
                    self._decode()
            except Exception:  # a bug outside the model calls: the running requests fail, the engine goes on
                traceback.print_exc()
                for r, row in enumerate(self.rows):
                    if row is not None:
                        self.rows[r] = None
                        self._finish(row.job, "error", "internal error (see the server log)")

    def _dtype(self) -> Any:
        return self.decoder.get_input_embeddings().weight.dtype

    def _admit(self, job: Job, r: int) -> None:
        """The prompt of ``job`` into row ``r``, and its first token."""
        torch = self.torch
        try:
            with torch.no_grad():
                ids = job.input_ids
                state = prefill(self.model, ids, np.ones_like(ids), self.max_len, **job.vision)
                flat = [t for pair in self.caches for t in pair] + [t for pair in state.caches for t in pair]
                onehot = torch.tensor((np.arange(self.slots) == r).astype(np.float32))
                out = self.insert(onehot, *flat)
                self.caches = tuple((out[2 * k], out[2 * k + 1]) for k in range(len(out) // 2))
                self.mrope = state.next_position.ndim == 2
                job.rng = np.random.default_rng(job.config.seed)
                job.seen = list(ids[0])
                token = self._choose(job, _numpy(state.logits) if _on_host(job.config) else None,
                                     _numpy(state.greedy)[:, 0], 0)
        except Exception as err:  # a bad input the checks missed: this request fails, the server goes on
            self._finish(job, "error", f"{type(err).__name__}: {err}")
            return
        self.stats.prompt_tokens += ids.shape[1]
        self.rows[r] = Row(job, token, state.next_position[..., 0], ids.shape[1])
        self._advance(r, token)

    @staticmethod
    def _choose(job: Job, logits: Optional[np.ndarray], greedy: np.ndarray, r: int) -> int:
        """Row ``r``'s next token: the graph's argmax ``greedy`` [rows], or chosen on the host from
        ``logits`` [rows, V] with the request's settings and random stream."""
        c = job.config
        if _on_host(c):
            scores = process_logits(logits[r:r + 1], np.asarray([job.seen], np.int64), c)
            return int(choose(scores, c, job.rng)[0])
        return int(greedy[r])

    def _advance(self, r: int, token: int) -> None:
        """Row ``r`` produced ``token``: hand it out, and free the row if its request is done."""
        row = self.rows[r]
        job = row.job
        job.generated += 1
        job.seen.append(token)
        self.stats.generation_tokens += 1
        if job.cancelled:
            finish = job.cancelled
        elif token in job.config.stop_token_ids:
            finish = "stop"
        else:
            job.emit(Event(token=token))
            finish = "length" if job.generated >= job.config.max_new_tokens or row.index + 1 >= self.max_len else None
        if finish:
            self.rows[r] = None
            self._finish(job, finish)
        else:
            row.token = token

    def _finish(self, job: Job, finish: str, error: Optional[str] = None) -> None:
        self.stats.finished[finish] += 1
        job.emit(Event(finish=finish, generated=job.generated, error=error))

    def _decode(self) -> None:
        """One decode step of every row."""
        torch = self.torch
        for r, row in enumerate(self.rows):  # cancelled while waiting for this step
            if row is not None and row.job.cancelled:
                self.rows[r] = None
                self._finish(row.job, row.job.cancelled)
        busy = [r for r, row in enumerate(self.rows) if row is not None]
        if not busy:
            return
        tokens = np.zeros((self.slots, 1), np.int64)
        positions = np.zeros((3, self.slots, 1) if self.mrope else (self.slots, 1), np.int64)
        index = np.zeros(self.slots, np.int64)
        for r in busy:
            row = self.rows[r]
            tokens[r, 0], index[r] = row.token, row.index
            positions[..., r, 0] = row.position
        try:
            with torch.no_grad():
                logits, greedy, _, _, self.caches = self.step(
                    torch.tensor(tokens), torch.tensor(positions), torch.tensor(index), self.mask, self.caches)
                host = any(_on_host(self.rows[r].job.config) for r in busy)
                logits, greedy = _numpy(logits) if host else None, _numpy(greedy)[:, 0]
                chosen = [(r, self._choose(self.rows[r].job, logits, greedy, r)) for r in busy]
        except Exception as err:  # every running request fails; the server goes on
            for r in busy:
                self._finish(self.rows[r].job, "error", f"{type(err).__name__}: {err}")
                self.rows[r] = None
            return
        self.stats.decode_steps += 1
        self.stats.busy_row_steps += len(busy)
        for r, token in chosen:
            row = self.rows[r]
            row.position, row.index = row.position + 1, row.index + 1
            self._advance(r, token)


def insert_row_step(decoder: Any, torch: Any) -> Any:
    """``insert(row [slots] one-hot, *tensors) -> tensors``: ``tensors`` are every layer's keys
    and values of the big cache, then of a one-row cache; returns the big cache's with the
    row marked by ``row`` replaced (one graph on MindSpore)."""

    def insert(row, *tensors):
        half = len(tensors) // 2
        keep = (row != 0).reshape(-1, 1, 1, 1)
        out = ()
        for k in range(half):
            out = out + (torch.where(keep, tensors[half + k], tensors[k]),)
        return out

    return _graph(decoder, "insert_row", insert, torch)
