"""Sample order per epoch: deterministic in ``(seed, epoch)``, optionally grouped by length
(XTuner's ``LengthGroupedSampler``), split across data-parallel ranks."""
from __future__ import annotations

from typing import Optional

import numpy as np


def length_grouped_indices(lengths: np.ndarray, group_batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """XTuner's grouping: shuffle, cut into mega-batches of ``group_batch_size``, sort each by length
    (longest first). With both signs present (``> 0`` multimodal, ``< 0`` text-only) the two
    modalities are grouped apart, the full mega-batches shuffled together, and the two
    remainders merged into a last mega-batch, so a mega-batch never mixes modalities but the last."""
    lengths = np.asarray(lengths)
    if (lengths == 0).any():
        raise ValueError("lengths must be non-zero (sign marks the modality)")

    def megabatches(indices: np.ndarray) -> list[np.ndarray]:
        shuffled = indices[rng.permutation(len(indices))]
        groups = [shuffled[i : i + group_batch_size] for i in range(0, len(shuffled), group_batch_size)]
        return [g[np.argsort(-np.abs(lengths[g]), kind="stable")] for g in groups]

    multimodal, text = np.flatnonzero(lengths > 0), np.flatnonzero(lengths < 0)
    if len(multimodal) == 0 or len(text) == 0:
        groups = megabatches(np.arange(len(lengths)))
        return np.concatenate(groups) if groups else np.zeros(0, np.int64)
    mm, lang = megabatches(multimodal), megabatches(text)
    last = np.concatenate([mm[-1], lang[-1]])
    full = mm[:-1] + lang[:-1]
    full = [full[i] for i in rng.permutation(len(full))]
    last = last[np.argsort(-np.abs(lengths[last]), kind="stable")]
    return np.concatenate(full + [last])


class EpochSampler:
    """The indices one rank reads in an epoch, split as Megatron's data sampler splits them.

    The global order (a permutation, length-grouped in mega-batches of ``group_batch_size``
    if ``lengths`` is given, or ``0..n-1`` without shuffle) is, with several ranks, padded by
    wrapping around to a multiple of ``micro_batch_size * world_size`` (never cut:
    ``drop_last`` is the loader's, applied to micro-batches of good samples) and read in
    blocks of that size; rank ``r`` takes the ``r``-th run of ``micro_batch_size`` indices of
    every block. So the micro-batches of a global batch hold the same samples whatever the
    data-parallel size: one worker's micro-batch ``k`` is the micro-batch some rank reads.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        lengths: Optional[np.ndarray] = None,
        group_batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        micro_batch_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.lengths, self.group_batch_size = lengths, group_batch_size
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.micro_batch_size = micro_batch_size

    def indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.lengths is not None:
            order = length_grouped_indices(self.lengths, self.group_batch_size, rng)
        elif self.shuffle:
            order = rng.permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        if self.world_size == 1:
            return order
        # Padded by wrapping around, never cut, also with drop_last: the loader fills
        # micro-batches with good samples and applies drop_last to them (a cut here would drop
        # records before anyone knows which are bad: issue 15 item 7).
        block = self.micro_batch_size * self.world_size
        if len(order) % block:
            order = np.concatenate([order, np.resize(order, block - len(order) % block)])
        runs = order.reshape(-1, self.world_size, self.micro_batch_size)  # [blocks, ranks, micro-batch]
        return runs[:, self.rank].reshape(-1)
