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

from msmm.data.bad_input import BadInput, BadInputLog
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
            return np.ndarray(self.shape, self.dtype, buffer=block.buf).copy()
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


def _build_batch(job: tuple[np.ndarray, int, bool]) -> tuple[Optional[Batch], list[BadInput]]:
    """Build the batch of ``indices`` (``in_worker``: hand its large arrays back via shared memory)."""
    indices, epoch, in_worker = job
    dataset, collate = _WORKER_STATE["dataset"], _WORKER_STATE["collate"]
    samples, bad = [], []
    for i in indices:
        item = dataset.get(int(i), epoch)
        (bad if isinstance(item, BadInput) else samples).append(item)
    batch = collate(samples) if samples else None
    if batch is not None and in_worker:
        batch = share_batch(batch)
    return batch, bad


class DataLoader:
    """Iterating gives the batches of the current epoch, then advances the epoch.

    A bad sample is left out of its batch (a batch of only bad samples is skipped) and reported
    to ``log``, which raises in strict mode and prints the epoch summary at the end of each epoch.
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
        self.epoch, self.batch_index = 0, 0

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The index groups of ``epoch``, in order."""
        order = self.sampler.indices(epoch)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.sampler.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this loader has seed {self.sampler.seed}")
        self.epoch, self.batch_index = state["epoch"], state["batch_index"]

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        in_worker = self.num_workers > 0
        jobs = [(indices, epoch, in_worker) for indices in self.batches(epoch)[self.batch_index :]]
        if not in_worker:
            _init_worker(self.dataset, self.collate)
            results = map(_build_batch, jobs)
            yield from self._hand_out(results)
        else:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no Rust thread pool across fork
            context = multiprocessing.get_context(self.mp_context)
            with context.Pool(self.num_workers, _init_worker, (self.dataset, self.collate)) as pool:
                yield from self._hand_out(pool.imap(_build_batch, jobs))
        self.log.epoch_summary(epoch)
        self.epoch, self.batch_index = epoch + 1, 0

    def _hand_out(self, results) -> Iterator[Batch]:
        for batch, bad in results:
            for problem in bad:
                self.log.report(problem)
            self.batch_index += 1
            if batch is not None:
                yield unshare_batch(batch)
