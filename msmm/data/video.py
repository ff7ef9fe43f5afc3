"""Video reading (decord) and frame sampling: InternVL segments, Qwen2-VL frames per second."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Video:
    frames: list[Image.Image]  # the sampled frames, RGB
    indices: np.ndarray  # their positions in the video
    fps: float  # the video's average frame rate


def read_video(path: str, sampler, rng: np.random.Generator | None = None) -> Video:
    """Decode the frames ``sampler(total_frames, fps, rng)`` chooses."""
    import decord  # imported here: worker processes that never read a video need not load it

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    total, fps = len(reader), float(reader.get_avg_fps())
    if total == 0:
        raise ValueError("video has no frames")
    indices = np.asarray(sampler(total, fps, rng), np.int64)
    frames = reader.get_batch(indices.tolist()).asnumpy()  # (F, H, W, 3) uint8
    return Video([Image.fromarray(f) for f in frames], indices, fps)


class InternVLFrameSampler:
    """InternVL: ``n`` frames, ``n`` drawn in ``[min_frames, max_frames]``, one per equal segment.

    ``method``: ``"rand"`` (a random frame of each segment; training), ``"middle"`` (the middle
    frame; evaluation) or ``"fps<rate>"`` (one frame every ``1/rate`` seconds, at most
    ``max_frames``). Videos shorter than ``n`` frames repeat their last sampled frame.
    """

    def __init__(self, min_frames: int = 4, max_frames: int = 24, method: str = "rand") -> None:
        self.min_frames, self.max_frames, self.method = min_frames, max_frames, method

    def __call__(self, total: int, fps: float, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        if self.method.startswith("fps"):
            step = 1 / float(self.method[3:])
            seconds = np.arange(step / 2, total / fps + step / 2, step)
            indices = np.around(seconds * fps).astype(np.int64)
            return indices[indices < total][: self.max_frames]
        n = int(rng.integers(self.min_frames, self.max_frames + 1))
        count = min(n, total)
        bounds = np.linspace(0, total, count + 1).astype(np.int64)
        starts, stops = bounds[:-1], bounds[1:] - 1  # segment i covers [starts[i], stops[i]]
        if self.method == "middle":
            indices = (starts + stops) // 2
        elif (stops > starts).all():
            indices = rng.integers(starts, stops)  # InternVL draws from [start, stop)
        else:  # segments of one frame: a sorted random subset instead
            indices = np.sort(rng.permutation(total)[:count])
        if count < n:
            indices = np.concatenate([indices, np.full(n - count, indices[-1])])
        return indices


class Qwen2VLFrameSampler:
    """Qwen2-VL: ``fps`` frames per second of video, clamped to ``[min_frames, max_frames]`` and
    the video length, rounded down to a multiple of the temporal patch (``frame_factor``), spread
    uniformly (frame ``floor(i * total / n)``)."""

    def __init__(self, fps: float = 2.0, min_frames: int = 4, max_frames: int = 768, frame_factor: int = 2) -> None:
        self.fps, self.min_frames, self.max_frames, self.frame_factor = fps, min_frames, max_frames, frame_factor

    def num_frames(self, total: int, fps: float) -> int:
        f = self.frame_factor
        max_frames = math.floor(min(self.max_frames, total) / f) * f
        n = min(min(max(total / fps * self.fps, self.min_frames), max_frames), total)
        n = math.floor(n / f) * f
        if n == 0:
            raise ValueError(f"video of {total} frame(s) is shorter than one temporal patch of {f}")
        return n

    def __call__(self, total: int, fps: float, rng: np.random.Generator | None = None) -> np.ndarray:
        n = self.num_frames(total, fps)
        return np.arange(n, dtype=np.int64) * total // n
