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
) -> Tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids [3, B, L] and the per-row delta [B, 1] (max position + 1 - L).

    Text tokens advance all three axes together. A vision block (the tokens after each
    ``vision_start_token_id``) starts at the next text position and spreads over
    (temporal, row, column) of its merged grid; the text after it resumes at the largest
    position so far + 1. Padding (attention_mask 0) gets position 1.

    Qwen2-VL: the temporal index of frame k is k. Qwen2.5-VL (``tokens_per_second`` set):
    it is int(k * second_per_grid_t * tokens_per_second), with second_per_grid_t 0 for
    images and ``second_per_grid_ts[v]`` (default 1.0) for video v.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    batch, seq = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).astype(np.int64)
    images = np.zeros((0, 3), np.int64) if image_grid_thw is None else _grids(image_grid_thw)
    videos = np.zeros((0, 3), np.int64) if video_grid_thw is None else _grids(video_grid_thw)
    if not len(images) and not len(videos):
        positions = np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)
        positions = np.broadcast_to(positions, (3, batch, seq)).copy()
        deltas = positions.max(axis=(0, 2)).reshape(batch, 1) + 1 - seq
        return positions, deltas
    m = spatial_merge_size
    positions = np.ones((3, batch, seq), np.int64)
    deltas = np.zeros((batch, 1), np.int64)
    next_image = next_video = 0
    for row in range(batch):
        valid = np.flatnonzero(mask[row] == 1)
        tokens = ids[row, valid]
        pieces, start, cursor = [], 0, 0  # start: next token to place; cursor: next free position
        starts = np.flatnonzero(tokens[:-1] == vision_start_token_id) + 1
        for pos in starts:
            kind = tokens[pos]
            if kind == image_token_id:
                if next_image >= len(images):
                    raise ValueError(f"row {row}: more images in input_ids than rows in image_grid_thw")
                (t, h, w), second = images[next_image], 0.0
                next_image += 1
            elif kind == video_token_id:
                if next_video >= len(videos):
                    raise ValueError(f"row {row}: more videos in input_ids than rows in video_grid_thw")
                (t, h, w) = videos[next_video]
                second = 1.0 if second_per_grid_ts is None else float(np.asarray(second_per_grid_ts)[next_video])
                next_video += 1
            else:
                continue
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
        row_positions = np.concatenate(pieces, axis=1)
        positions[:, row, valid] = row_positions
        deltas[row, 0] = row_positions.max() + 1 - seq
    if next_image != len(images) or next_video != len(videos):
        raise ValueError(
            f"input_ids hold {next_image} images and {next_video} videos, grids give "
            f"{len(images)} and {len(videos)}"
        )
    return positions, deltas
