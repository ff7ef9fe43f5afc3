"""One training sample from one record: media loaded and preprocessed, conversation encoded."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np

from msmm.data.arena import join
from msmm.data.bad_input import BadInput
from msmm.data.image_processing import CLIPImageTransform, InternVLImageTransform, Qwen2VLImageTransform, load_image
from msmm.data.records import Record
from msmm.data.templates import ConversationEncoder, PlaceholderError
from msmm.data.video import InternVLFrameSampler, Qwen2VLFrameSampler, read_video

Sample = dict[str, np.ndarray]


class InternVLVision:
    """Tiles per image (the tile budget shared among a record's images), one tile per video frame."""

    def __init__(self, transform: InternVLImageTransform, frames: InternVLFrameSampler, tokens_per_tile: int = 256) -> None:
        self.transform, self.frames, self.tokens_per_tile = transform, frames, tokens_per_tile

    def __call__(self, images, videos, rng) -> tuple[Sample, list[int], list[list[int]]]:
        max_tiles = max(1, self.transform.max_tiles // max(len(images), 1))
        tiles = [self.transform(im, max_tiles=max_tiles) for im in images]
        video_tiles = [join([self.transform(f, max_tiles=1) for f in v.frames]) for v in videos]
        s = self.transform.tile_size
        pixels = join(tiles + video_tiles) if tiles or video_tiles else np.zeros((0, 3, s, s), np.float32)
        out = {"pixel_values": pixels, "image_flags": np.ones(len(pixels), np.int64)}
        return out, [len(t) * self.tokens_per_tile for t in tiles], [[self.tokens_per_tile] * len(v) for v in video_tiles]


class Qwen2VLVision:
    """Patches and ``(t, h, w)`` grids; ``merge_size**2`` patches make one token."""

    def __init__(self, image: Qwen2VLImageTransform, video: Qwen2VLImageTransform, frames: Qwen2VLFrameSampler) -> None:
        self.image, self.video, self.frames = image, video, frames

    def __call__(self, images, videos, rng) -> tuple[Sample, list[int], list[list[int]]]:
        merge = self.image.merge_size**2
        out: Sample = {}
        image_tokens, video_tokens = [], []
        for key, transform, items, tokens in (
            ("", self.image, [[im] for im in images], image_tokens),
            ("_videos", self.video, [v.frames for v in videos], video_tokens),
        ):
            if not items:
                continue
            patches, grids = zip(*(transform.frames(frames) for frames in items))
            out[f"pixel_values{key}"] = join(patches)
            out[f"{'video' if key else 'image'}_grid_thw"] = np.asarray(grids, np.int64)
            tokens += [int(np.prod(g)) // merge for g in grids]
        return out, image_tokens, [[n] for n in video_tokens]


class LlavaVision:
    """One CLIP crop per image, ``(crop / patch)**2`` tokens each (CLS dropped)."""

    frames = None  # no video

    def __init__(self, transform: CLIPImageTransform, patch_size: int = 14) -> None:
        self.transform, self.tokens = transform, (transform.crop_size // patch_size) ** 2

    def __call__(self, images, videos, rng) -> tuple[Sample, list[int], list[list[int]]]:
        s = self.transform.crop_size
        pixels = join([self.transform(im)[None] for im in images]) if images else np.zeros((0, 3, s, s), np.float32)
        return {"pixel_values": pixels}, [self.tokens] * len(images), []


class _LazyGenerator:
    """``np.random.default_rng(seed)``, made on first use: seeding costs 0.1 ms, and a sample
    of images only (no video frames to draw) never draws."""

    def __init__(self, seed) -> None:
        self._seed, self._rng = seed, None

    def __getattr__(self, name: str):
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


class MultimodalDataset:
    """``dataset.get(i, epoch)`` -> a sample dict, or a :class:`BadInput` saying why record ``i`` is skipped.

    Random choices (video frames) draw from a generator seeded by ``(seed, epoch, i)``, so a
    sample is the same whichever worker builds it.
    """

    def __init__(self, records: Sequence[Record], encoder: ConversationEncoder, vision, seq_length: Optional[int] = None, seed: int = 0) -> None:
        self.records, self.encoder, self.vision = records, encoder, vision
        self.seq_length, self.seed = seq_length, seed

    def __len__(self) -> int:
        return len(self.records)

    def modality_lengths(self) -> np.ndarray:
        """Approximate lengths for length grouping: positive with media, negative text-only (XTuner)."""
        lengths = [max(r.text_length, 1) * (1 if r.images or r.videos else -1) for r in self.records]
        return np.asarray(lengths, np.int64)

    def get(self, index: int, epoch: int = 0) -> Union[Sample, BadInput]:
        record = self.records[index]
        rng = _LazyGenerator([self.seed, epoch, index])
        images, videos = [], []
        for path in record.images:
            try:
                images.append(load_image(path))
            except FileNotFoundError:
                return BadInput(record.where, "missing_image", path)
            except Exception as e:  # PIL raises many kinds for a corrupt file
                return BadInput(record.where, "corrupt_image", f"{path}: {e}")
        if record.videos and self.vision.frames is None:
            return BadInput(record.where, "bad_record", "this model takes no video")
        for path in record.videos:
            if not os.path.isfile(path):
                return BadInput(record.where, "missing_video", path)
            try:
                videos.append(read_video(path, self.vision.frames, rng))
            except Exception as e:  # decord raises its own error types
                return BadInput(record.where, "corrupt_video", f"{path}: {e}")
        try:
            sample, image_tokens, video_tokens = self.vision(images, videos, rng)
            encoded = self.encoder(record.messages, image_tokens, video_tokens)
        except PlaceholderError as e:
            return BadInput(record.where, "placeholder_mismatch", str(e))
        except ValueError as e:
            return BadInput(record.where, "bad_record", str(e))
        if self.seq_length is not None and len(encoded.input_ids) > self.seq_length:
            return BadInput(record.where, "too_long", f"{len(encoded.input_ids)} tokens > seq_length {self.seq_length}")
        sample["input_ids"], sample["labels"] = encoded.input_ids, encoded.labels
        return sample
