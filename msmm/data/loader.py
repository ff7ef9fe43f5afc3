"""Multi-process loading in a fixed order, with a position that can be saved and restored.

Batches are built by worker processes (``multiprocessing.Pool.imap``, which returns results
in submission order), so the sequence of batches depends only on the seed and the epoch,
never on worker timing. ``state_dict()`` records the epoch and how many batches of it were
handed out; ``load_state_dict()`` continues from the next one without rebuilding the
skipped ones.
"""
from __future__ import annotations

import multiprocessing
import os
from multiprocessing import shared_memory
from typing import Callable, Iterator, Optional, Union

import numpy as np

from msmm.data import arena
from msmm.data.bad_input import KINDS, BadInput, BadInputLog
from msmm.data.dataset import MultimodalDataset
from msmm.data.sampler import EpochSampler

Batch = dict[str, np.ndarray]

_WORKER_STATE: dict = {}  # the dataset and collator of a worker process
_SHARE_ABOVE = 1 << 20  # arrays of more bytes go through shared memory instead of the result pipe


class _SharedArray:
    """An array a worker left in shared memory; the main process copies it out and frees it."""

    def __init__(self, array: np.ndarray) -> None:
        block = shared_memory.SharedMemory(create=True, size=array.nbytes)
        np.ndarray(array.shape, array.dtype, buffer=block.buf)[...] = array
        self.name, self.shape, self.dtype = block.name, array.shape, array.dtype
        block.close()

    def take(self) -> np.ndarray:
        block = shared_memory.SharedMemory(name=self.name)
        try:
            out = arena.empty(self.shape, self.dtype)  # in the batch's memory when the loader collates
            out[...] = np.ndarray(self.shape, self.dtype, buffer=block.buf)
            return out
        finally:
            block.close()
            block.unlink()


def share_batch(batch: Batch) -> dict[str, Union[np.ndarray, _SharedArray]]:
    """Move a worker's large arrays to shared memory (undone by :func:`unshare_batch` in the main process)."""
    return {k: _SharedArray(v) if v.nbytes > _SHARE_ABOVE else v for k, v in batch.items()}


def unshare_batch(batch: dict[str, Union[np.ndarray, _SharedArray]]) -> Batch:
    return {k: v.take() if isinstance(v, _SharedArray) else v for k, v in batch.items()}


def _init_worker(dataset: MultimodalDataset, collate: Callable) -> None:
    _WORKER_STATE["dataset"], _WORKER_STATE["collate"] = dataset, collate


def _build_sample(job: tuple[int, int, bool]) -> Union[dict, BadInput]:
    """Sample ``index`` of ``epoch``, or why it is skipped (``in_worker``: its large arrays go
    back through shared memory)."""
    index, epoch, in_worker = job
    item = _WORKER_STATE["dataset"].get(index, epoch)
    if in_worker and not isinstance(item, BadInput):
        item = share_batch(item)
    return item


class DataLoader:
    """Iterating gives the micro-batches of the current epoch, then advances the epoch.

    Micro-batches are filled with *good* samples: the epoch's order (the sampler's) is walked
    sample by sample, a bad one is reported to ``log`` (which raises in strict mode) and its
    place goes to the next sample, so a bad record never costs a good one its turn. At the end
    of the epoch a partial micro-batch is completed with the epoch's first good samples when
    ``drop_last`` (every micro-batch full: one shape; every good sample trains each epoch), and
    handed out as it is otherwise. ``log`` prints the epoch summary after each epoch.

    ``state_dict()`` is the epoch, the micro-batches handed out, the position in the epoch's
    order after the last of them, and this epoch's skip counts; ``load_state_dict()`` resumes
    with the next micro-batch, the same one an uninterrupted run would give.
    """

    def __init__(
        self,
        dataset: MultimodalDataset,
        sampler: EpochSampler,
        collate: Callable,
        batch_size: int,
        num_workers: int = 0,
        drop_last: bool = True,
        log: Optional[BadInputLog] = None,
        mp_context: str = "fork",
    ) -> None:
        self.dataset, self.sampler, self.collate = dataset, sampler, collate
        self.batch_size, self.num_workers, self.drop_last = batch_size, num_workers, drop_last
        self.log = log if log is not None else BadInputLog()
        self.mp_context = mp_context
        self.epoch, self.batch_index, self.position = 0, 0, 0
        self._arena = arena.BatchArena(batch_size)

    def state_dict(self) -> dict[str, int]:
        state = {"epoch": self.epoch, "batch_index": self.batch_index, "position": self.position,
                 "seed": self.sampler.seed}
        state.update({f"skipped_{kind}": n for kind, n in self.log.counts.items() if n})
        state["skipped_before_epoch"] = self.log.skipped_so_far
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.sampler.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader has seed {self.sampler.seed}")
        self.epoch, self.batch_index = state["epoch"], state["batch_index"]
        # states saved before "position" existed: micro-batch b was order[b * size : (b + 1) * size]
        self.position = state.get("position", self.batch_index * self.batch_size)
        self.log.counts.clear()
        self.log.counts.update({k[len("skipped_"):]: v for k, v in state.items() if k[len("skipped_"):] in KINDS})
        self.log.skipped_so_far = state.get("skipped_before_epoch", 0)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        order = self.sampler.indices(epoch)
        in_worker = self.num_workers > 0
        jobs = [(int(i), epoch, in_worker) for i in order[self.position:]]
        if not in_worker:  # this loader's dataset (the worker state is per process: another loader may have set it)
            yield from self._fill((self._get(index, e) for index, e, _ in jobs), order, epoch)
        else:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no Rust thread pool across fork
            context = multiprocessing.get_context(self.mp_context)
            with context.Pool(self.num_workers, _init_worker, (self.dataset, self.collate)) as pool:
                yield from self._fill(pool.imap(_build_sample, jobs), order, epoch)
        self.log.epoch_summary(epoch)
        self.epoch, self.batch_index, self.position = epoch + 1, 0, 0

    def _get(self, index: int, epoch: int) -> Union[dict, BadInput]:
        with self._arena.active():  # the sample's arrays laid after the batch's previous ones
            return self.dataset.get(index, epoch)

    def _fill(self, results, order: np.ndarray, epoch: int) -> Iterator[Batch]:
        """Micro-batches of the good samples of ``results``. Each micro-batch's samples are built
        (workers 0) or copied out of shared memory (workers) end to end in the batch arena, so the
        collator's concatenation of their vision tensors is a view (msmm.data.arena)."""
        pending, consumed = [], self.position
        self._arena.start_batch()
        first = {}  # index -> its first position in the order: a padding repeat is not reported twice
        for p, i in enumerate(order.tolist()):
            first.setdefault(i, p)
        for item in results:
            consumed += 1
            if isinstance(item, BadInput):
                if first[int(order[consumed - 1])] == consumed - 1:
                    self.log.report(item)
                continue
            with self._arena.active():
                pending.append(unshare_batch(item))
            if len(pending) == self.batch_size:
                self.batch_index, self.position = self.batch_index + 1, consumed
                yield self.collate(pending)
                pending = []
                self._arena.start_batch()
        if not pending:
            return
        if self.drop_last:  # complete it with the epoch's first good samples (already reported if bad)
            for i in range(len(order) * self.batch_size):
                item = self._get(int(order[i % len(order)]), epoch)
                if not isinstance(item, BadInput):
                    pending.append(item)
                    if len(pending) == self.batch_size:
                        break
        self.batch_index, self.position = self.batch_index + 1, consumed
        yield self.collate(pending)
