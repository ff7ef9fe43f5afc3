"""Batching: right padding with an attention mask, or packing several samples per row with
per-sample boundaries (restarting ``position_ids``, ``segment_ids``, ``cu_seqlens``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from msmm.data.arena import join
from msmm.data.templates import IGNORE_INDEX

Sample = dict[str, np.ndarray]
TEXT_KEYS = ("input_ids", "labels")
# Vision tensors are concatenated along their first axis, in sample order (a view, not a copy,
# when the loader built the samples end to end in its batch arena: msmm.data.arena).
VISION_KEYS = ("pixel_values", "image_flags", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def _concat_vision(samples: Sequence[Sample]) -> Sample:
    out = {}
    for key in VISION_KEYS:
        parts = [s[key] for s in samples if key in s]
        if parts:
            out[key] = join(parts)
    return out


class PaddingCollator:
    """``input_ids`` / ``labels`` / ``attention_mask`` of shape ``(B, L)``, ``L`` the longest sample
    (rounded up to ``pad_to_multiple_of``); vision tensors concatenated over the batch."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1) -> None:
        self.pad_id, self.multiple = pad_id, pad_to_multiple_of

    def __call__(self, samples: Sequence[Sample]) -> Sample:
        longest = max(len(s["input_ids"]) for s in samples)
        length = -(-longest // self.multiple) * self.multiple
        batch = len(samples)
        input_ids = np.full((batch, length), self.pad_id, np.int64)
        labels = np.full((batch, length), IGNORE_INDEX, np.int64)
        attention_mask = np.zeros((batch, length), np.int64)
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = s["input_ids"], s["labels"], 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, **_concat_vision(samples)}


class PackingCollator:
    """Packs samples, in order, into rows of ``pack_length`` tokens (first fit).

    Per row: ``position_ids`` restart at 0 for each sample, ``segment_ids`` number the samples
    (``-1`` on padding); attention may only look within a segment (block-diagonal causal mask).
    Each sample's first label is -100: the token before it (the previous sample's last) predicts
    nothing, as when the samples run one by one.
    ``cu_seqlens`` are the segment boundaries in the flattened ``(R * pack_length)`` tokens,
    padding counted as its own segment, as varlen flash attention takes them. Vision tensors
    follow the samples' order in the flattened rows.
    """

    def __init__(self, pad_id: int, pack_length: int) -> None:
        self.pad_id, self.pack_length = pad_id, pack_length

    def __call__(self, samples: Sequence[Sample]) -> Sample:
        rows: list[list[int]] = []  # sample indices per row
        room: list[int] = []
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            if n > self.pack_length:
                raise ValueError(f"sample of {n} tokens does not fit pack_length {self.pack_length}")
            row = next((r for r, free in enumerate(room) if free >= n), None)
            if row is None:
                rows.append([]), room.append(self.pack_length)
                row = len(rows) - 1
            rows[row].append(i)
            room[row] -= n
        shape = (len(rows), self.pack_length)
        input_ids = np.full(shape, self.pad_id, np.int64)
        labels = np.full(shape, IGNORE_INDEX, np.int64)
        position_ids = np.zeros(shape, np.int64)
        segment_ids = np.full(shape, -1, np.int64)
        cu_seqlens = [0]
        for r, members in enumerate(rows):
            start = 0
            for segment, i in enumerate(members):
                n = len(samples[i]["input_ids"])
                input_ids[r, start : start + n] = samples[i]["input_ids"]
                labels[r, start : start + n] = samples[i]["labels"]
                labels[r, start] = IGNORE_INDEX  # never predicted: shifted labels start at the second token
                position_ids[r, start : start + n] = np.arange(n)
                segment_ids[r, start : start + n] = segment
                start += n
                cu_seqlens.append(r * self.pack_length + start)
            if start < self.pack_length:
                cu_seqlens.append((r + 1) * self.pack_length)
        ordered = [samples[i] for members in rows for i in members]
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": (segment_ids >= 0).astype(np.int64),
            "position_ids": position_ids,
            "segment_ids": segment_ids,
            "cu_seqlens": np.asarray(cu_seqlens, np.int32),
            **_concat_vision(ordered),
        }
