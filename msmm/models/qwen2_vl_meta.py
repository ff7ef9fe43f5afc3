"""Data-dependent metadata of Qwen2-VL / Qwen2.5-VL, computed framework-free in numpy.

Everything whose shape or values depend on the image grids or on where the vision tokens
sit in the text is computed here, outside ``forward``, and handed to the model as tensors,
so the model itself has static shapes (MindSpore graph mode):

* ``vision_metadata``: per-patch 2D rotary positions and attention segments for the ViT,
  plus (Qwen2.5-VL) the window permutation and the window segments.
* ``get_rope_index``: the 3D (temporal, height, width) M-RoPE position ids of the text.

Grids are ``grid_thw`` rows (t, h, w) in patches: t frames (after temporal patching), an
h x w patch grid. Patches arrive in 2x2-merge-block order, as the Qwen2-VL processor emits
them. When images and videos are fed together, the ViT sees the image grids first, then
the video grids (``np.concatenate([image_grid_thw, video_grid_thw])``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def _grids(grid_thw) -> np.ndarray:
    grids = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    if (grids <= 0).any():
        raise ValueError(f"grid_thw rows must be positive (t, h, w), got {grids.tolist()}")
    return grids


def vision_position_ids(grid_thw, spatial_merge_size: int) -> np.ndarray:
    """(row, col) of every patch, in merge-block order, repeated per frame: [N, 2] int64."""
    m = spatial_merge_size
    out = []
    for t, h, w in _grids(grid_thw):
        if h % m or w % m:
            raise ValueError(f"grid {h}x{w} is not divisible by spatial_merge_size {m}")
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        blocks = [a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols)]
        out.append(np.tile(np.stack(blocks, axis=-1), (t, 1)))
    return np.concatenate(out).astype(np.int64)


def vision_frame_ids(grid_thw) -> np.ndarray:
    """Segment id of every patch: each frame of each image/video is its own segment [N]."""
    grids = _grids(grid_thw)
    frame_sizes = np.repeat(grids[:, 1] * grids[:, 2], grids[:, 0])
    return np.repeat(np.arange(len(frame_sizes)), frame_sizes).astype(np.int64)


def window_partition(
    grid_thw, spatial_merge_size: int, window_size: int, patch_size: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL window attention over merge units (2x2 patch blocks).

    Returns ``window_index`` [U]: merge units reordered window by window (row-major windows
    of ``window_size`` pixels, per frame; edge windows are smaller), and ``window_ids`` [U]:
    the window of each reordered unit.
    """
    m = spatial_merge_size
    side = window_size // m // patch_size  # window side in merge units
    if side <= 0:
        raise ValueError(f"window_size {window_size} is smaller than one merge unit ({m * patch_size} pixels)")
    index, ids, offset, next_window = [], [], 0, 0
    for t, h, w in _grids(grid_thw):
        gh, gw = h // m, w // m
        units = np.arange(t * gh * gw).reshape(t, gh, gw)
        for frame in units:
            for r0 in range(0, gh, side):
                for c0 in range(0, gw, side):
                    window = frame[r0:r0 + side, c0:c0 + side].reshape(-1)
                    index.append(window + offset)
                    ids.append(np.full(window.shape, next_window))
                    next_window += 1
        offset += t * gh * gw
    return np.concatenate(index).astype(np.int64), np.concatenate(ids).astype(np.int64)


def vision_metadata(
    grid_thw,
    spatial_merge_size: int,
    window_size: Optional[int] = None,
    patch_size: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Inputs of the Qwen ViT besides the pixels, keyed like the model's arguments.

    Qwen2-VL (``window_size`` None): ``vision_position_ids`` [N, 2], ``vision_segment_ids`` [N].
    Qwen2.5-VL: the sequence is permuted window by window before the blocks, so the
    positions and frame segments are given in permuted order, plus
    ``vision_window_segment_ids`` [N], ``vision_window_index`` [U] (the permutation of merge
    units) and ``vision_reverse_index`` [U] (its inverse, applied after the merger).
    """
    positions = vision_position_ids(grid_thw, spatial_merge_size)
    frames = vision_frame_ids(grid_thw)
    if window_size is None:
        return {"vision_position_ids": positions, "vision_segment_ids": frames}
    unit = spatial_merge_size**2
    index, window_ids = window_partition(grid_thw, spatial_merge_size, window_size, patch_size)

    def permute(per_patch: np.ndarray) -> np.ndarray:
        return per_patch.reshape(-1, unit, *per_patch.shape[1:])[index].reshape(per_patch.shape)

    return {
        "vision_position_ids": permute(positions),
        "vision_segment_ids": permute(frames),
        "vision_window_segment_ids": np.repeat(window_ids, unit),
        "vision_window_index": index,
        "vision_reverse_index": np.argsort(index).astype(np.int64),
    }


class _GridCursor:
    """The image and video grids, consumed in order as their vision blocks appear in the text."""

    def __init__(self, image_grid_thw, video_grid_thw, second_per_grid_ts) -> None:
        self.images = np.zeros((0, 3), np.int64) if image_grid_thw is None else _grids(image_grid_thw)
        self.videos = np.zeros((0, 3), np.int64) if video_grid_thw is None else _grids(video_grid_thw)
        self.seconds = second_per_grid_ts
        self.next_image = self.next_video = 0

    def take(self, is_image: bool, row: int) -> Tuple[np.ndarray, float]:
        """The next image's (t, h, w) and its seconds per temporal patch (0 for images), or the next video's."""
        if is_image:
            if self.next_image >= len(self.images):
                raise ValueError(f"row {row}: more images in input_ids than rows in image_grid_thw")
            self.next_image += 1
            return self.images[self.next_image - 1], 0.0
        if self.next_video >= len(self.videos):
            raise ValueError(f"row {row}: more videos in input_ids than rows in video_grid_thw")
        self.next_video += 1
        second = 1.0 if self.seconds is None else float(np.asarray(self.seconds)[self.next_video - 1])
        return self.videos[self.next_video - 1], second

    def check_all_taken(self) -> None:
        if self.next_image != len(self.images) or self.next_video != len(self.videos):
            raise ValueError(
                f"input_ids hold {self.next_image} images and {self.next_video} videos, grids give "
                f"{len(self.images)} and {len(self.videos)}"
            )


def _sequence_positions(tokens: np.ndarray, grids: _GridCursor, row: int, *, spatial_merge_size: int,
                        image_token_id: int, video_token_id: int, vision_start_token_id: int,
                        tokens_per_second: Optional[float]) -> np.ndarray:
    """M-RoPE positions [3, n] of one sequence's tokens, starting at 0."""
    m = spatial_merge_size
    pieces, start, cursor = [], 0, 0  # start: next token to place; cursor: next free position
    for pos in np.flatnonzero(tokens[:-1] == vision_start_token_id) + 1:
        kind = tokens[pos]
        if kind not in (image_token_id, video_token_id):
            continue
        (t, h, w), second = grids.take(kind == image_token_id, row)
        gh, gw = h // m, w // m
        n_text = pos - start
        pieces.append(np.broadcast_to(np.arange(n_text) + cursor, (3, n_text)))
        cursor += n_text
        frames = np.arange(t)
        if tokens_per_second is not None:
            frames = (frames * second * tokens_per_second).astype(np.int64)
        grid = np.stack(np.meshgrid(frames, np.arange(gh), np.arange(gw), indexing="ij")).reshape(3, -1)
        if np.any(tokens[pos:pos + grid.shape[1]] != kind):
            raise ValueError(
                f"row {row}: expected {grid.shape[1]} vision tokens {kind} after position {pos - 1} "
                f"for grid {(t, h, w)}"
            )
        pieces.append(grid + cursor)
        cursor = int(pieces[-1].max()) + 1
        start = pos + grid.shape[1]
    n_text = len(tokens) - start
    pieces.append(np.broadcast_to(np.arange(n_text) + cursor, (3, n_text)))
    return np.concatenate(pieces, axis=1)


def get_rope_index(
    input_ids,
    image_grid_thw=None,
    video_grid_thw=None,
    attention_mask=None,
    *,
    spatial_merge_size: int,
    image_token_id: int,
    video_token_id: int,
    vision_start_token_id: int,
    second_per_grid_ts: Optional[Sequence[float]] = None,
    tokens_per_second: Optional[float] = None,
    segment_ids=None,
) -> Tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids [3, B, L] and the per-row delta [B, 1] (max position + 1 - L).

    Text tokens advance all three axes together. A vision block (the tokens after each
    ``vision_start_token_id``) starts at the next text position and spreads over
    (temporal, row, column) of its merged grid; the text after it resumes at the largest
    position so far + 1. Padding (attention_mask 0) gets position 1.

    Qwen2-VL: the temporal index of frame k is k. Qwen2.5-VL (``tokens_per_second`` set):
    it is int(k * second_per_grid_t * tokens_per_second), with second_per_grid_t 0 for
    images and ``second_per_grid_ts[v]`` (default 1.0) for video v.

    ``segment_ids`` [B, L] (packed rows; -1 = padding): each segment is its own sequence, its
    positions start at 0 again, as if it ran alone.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    batch, seq = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).astype(np.int64)
    grids = _GridCursor(image_grid_thw, video_grid_thw, second_per_grid_ts)
    if segment_ids is None and not len(grids.images) and not len(grids.videos):
        positions = np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)
        positions = np.broadcast_to(positions, (3, batch, seq)).copy()
        deltas = positions.max(axis=(0, 2)).reshape(batch, 1) + 1 - seq
        return positions, deltas
    segments = np.where(mask == 1, 0, -1) if segment_ids is None else \
        np.where(mask == 1, np.asarray(segment_ids, np.int64), -1)
    options = dict(spatial_merge_size=spatial_merge_size, image_token_id=image_token_id, video_token_id=video_token_id,
                   vision_start_token_id=vision_start_token_id, tokens_per_second=tokens_per_second)
    positions = np.ones((3, batch, seq), np.int64)
    deltas = np.zeros((batch, 1), np.int64)
    for row in range(batch):
        for segment in dict.fromkeys(segments[row][segments[row] >= 0].tolist()):  # in order of appearance
            where = np.flatnonzero(segments[row] == segment)
            positions[:, row, where] = _sequence_positions(ids[row, where], grids, row, **options)
        valid = segments[row] >= 0
        deltas[row, 0] = (positions[:, row, valid].max() if valid.any() else 0) + 1 - seq
    grids.check_all_taken()
    return positions, deltas
