"""Image preprocessing of InternVL (dynamic tiling), Qwen2-VL (smart resize + patchify) and
LLaVA-1.5 (CLIP, optional pad-to-square), framework-free.

Resizing is PIL's bicubic on the uint8 image, as in the HF processors and the original
repositories. Rescale (1/255) and normalisation are one table look-up per channel, built with
the same float arithmetic as HF's ``rescale`` + ``normalize`` so the values are equal.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PixelNormalizer:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std`` by a per-channel look-up table."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)  # HF rescale: f64 then f32
        mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.table = (scaled[None, :] - mean32[:, None]) / std32[:, None]  # (C, 256)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: uint8 ``(..., H, W, C)`` -> float32 ``(..., C, H, W)``."""
        channels_first = np.moveaxis(pixels, -1, -3)
        out = np.empty(channels_first.shape, np.float32)
        for c in range(channels_first.shape[-3]):
            np.take(self.table[c], channels_first[..., c, :, :], out=out[..., c, :, :])
        return out


def load_image(path: str) -> Image.Image:
    """Open an image as RGB, decoding it fully so a corrupt file fails here."""
    with Image.open(path) as image:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


# ----------------------------------------------------------------------------- InternVL


def candidate_tile_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All ``(columns, rows)`` with ``min_tiles <= columns * rows <= max_tiles``, fewest tiles first."""
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_tile_grid(width: int, height: int, tile_size: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """The grid whose aspect ratio is closest to the image's.

    On a tie the grid with more tiles wins while the image has more than half of that grid's
    pixel area (InternVL's ``find_closest_aspect_ratio``).
    """
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_tile_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


class InternVLImageTransform:
    """InternVL dynamic tiling: ``tile_size`` px tiles on the closest grid, plus a thumbnail.

    Returns ``pixel_values`` of shape ``(num_tiles, 3, tile_size, tile_size)``; the thumbnail (a
    resize of the whole image) is last and only added when there is more than one tile.
    """

    def __init__(
        self,
        tile_size: int = 448,
        min_tiles: int = 1,
        max_tiles: int = 12,
        use_thumbnail: bool = True,
        dynamic: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.tile_size, self.min_tiles, self.max_tiles = tile_size, min_tiles, max_tiles
        self.use_thumbnail, self.dynamic = use_thumbnail, dynamic
        self.normalize = PixelNormalizer(mean, std)

    def __call__(self, image: Image.Image, max_tiles: int | None = None) -> np.ndarray:
        s = self.tile_size
        if not self.dynamic:
            return self.normalize(np.asarray(image.resize((s, s), Image.BICUBIC))[None])
        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        cols, rows = closest_tile_grid(image.width, image.height, s, self.min_tiles, max_tiles)
        canvas = self.normalize(np.asarray(image.resize((cols * s, rows * s), Image.BICUBIC)))  # (3, rows*s, cols*s)
        thumbnail = self.use_thumbnail and rows * cols > 1
        tiles = np.empty((rows * cols + thumbnail, 3, s, s), np.float32)
        tiles[: rows * cols].reshape(rows, cols, 3, s, s)[...] = canvas.reshape(3, rows, s, cols, s).transpose(1, 3, 0, 2, 4)
        if thumbnail:
            tiles[-1] = self.normalize(np.asarray(image.resize((s, s), Image.BICUBIC)))
        return tiles


# ----------------------------------------------------------------------------- Qwen2-VL


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area in ``[min_pixels, max_pixels]``,
    aspect ratio kept as well as possible."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is over 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class Qwen2VLImageTransform:
    """Qwen2-VL: smart resize, normalise, cut into ``temporal x patch x patch`` patches.

    Returns ``(patches, grid_thw)`` with patches ``(t * h * w, C * T * P * P)`` ordered so each
    ``merge_size x merge_size`` block of neighbouring patches is contiguous (the merger's input).
    """

    def __init__(
        self,
        min_pixels: int = 56 * 56,
        max_pixels: int = 28 * 28 * 1280,
        patch_size: int = 14,
        temporal_patch_size: int = 2,
        merge_size: int = 2,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> None:
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.normalize = PixelNormalizer(mean, std)

    def __call__(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
        return self.frames([image])

    def frames(self, frames: Sequence[Image.Image]) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Patchify one image (one frame) or the sampled frames of one video (all of one size)."""
        height, width = smart_resize(
            frames[0].height, frames[0].width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels
        )
        pixels = self.normalize(np.stack([np.asarray(f.resize((width, height), Image.BICUBIC)) for f in frames]))  # (F, C, H, W)
        t = self.temporal_patch_size
        if len(frames) == 1:  # an image: its T copies are a broadcast, copied once by the final reshape
            pixels = np.broadcast_to(pixels, (t, *pixels.shape[1:]))
        elif len(frames) % t:
            pad = np.repeat(pixels[-1:], t - len(frames) % t, axis=0)  # repeat the last frame
            pixels = np.concatenate([pixels, pad])
        p, m = self.patch_size, self.merge_size
        grid_t, grid_h, grid_w = pixels.shape[0] // t, height // p, width // p
        c = pixels.shape[1]
        # (F, C, H, W) -> (t, T, C, h/m, m, P, w/m, m, P) -> (t, h/m, w/m, m, m, C, T, P, P)
        pixels = pixels.reshape(grid_t, t, c, grid_h // m, m, p, grid_w // m, m, p)
        pixels = pixels.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return pixels.reshape(grid_t * grid_h * grid_w, c * t * p * p), (grid_t, grid_h, grid_w)


# ----------------------------------------------------------------------------- LLaVA (CLIP)


def pad_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA-1.5 ``expand2square``: centre the image on a square of its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class CLIPImageTransform:
    """CLIP: resize the shorter side to ``size``, centre-crop ``crop_size``; optional pad-to-square
    first (LLaVA-1.5, background = the mean colour). Returns ``(3, crop_size, crop_size)``."""

    def __init__(
        self,
        size: int = 336,
        crop_size: int = 336,
        pad_to_square: bool = False,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> None:
        self.size, self.crop_size, self.pad = size, crop_size, pad_to_square
        self.background = tuple(int(x * 255) for x in mean)
        self.normalize = PixelNormalizer(mean, std)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self.pad:
            image = pad_to_square(image, self.background)
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.size, int(self.size * long / short)
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        image = image.resize(new_size, Image.BICUBIC)
        top, left = (new_size[1] - self.crop_size) // 2, (new_size[0] - self.crop_size) // 2
        if top < 0 or left < 0:
            raise ValueError(f"resized image {new_size} is smaller than the crop {self.crop_size}")
        pixels = np.asarray(image)[top : top + self.crop_size, left : left + self.crop_size]
        return self.normalize(pixels)
