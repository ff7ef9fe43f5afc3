"""Image preprocessing of InternVL (dynamic tiling), Qwen2-VL (smart resize + patchify) and
LLaVA-1.5 (CLIP, optional pad-to-square), framework-free.

The output equals the HF processors' (transformers 4.53, the PIL-based ones) bit for bit:
images are converted to RGB as ``convert_to_rgb`` does, resized with Pillow's bicubic filter
on the uint8 image (:mod:`msmm.data.resize`: a compiled kernel equal to the installed
Pillow, or Pillow itself), and rescaled (1/255) and normalised by one table look-up per
channel built with HF's float arithmetic. With the kernel, resize, normalisation and the
model's layout (tiles, patches, crops) are one pass that writes the float32 output once.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from PIL import Image

from msmm.data.arena import empty as batch_empty  # a sample's output: in the batch's memory when a loader builds it
from msmm.data.resize import Canvas, native
from msmm.data.resize import pixels as image_pixels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _offsets(shape: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """Element offsets of the C-order positions of an index space of ``shape`` with ``strides``."""
    offsets = np.zeros(1, np.int64)
    for n, stride in zip(shape, strides):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * stride).ravel()
    return offsets


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

    def resize_into(self, image: Image.Image | np.ndarray, size: tuple[int, int], dst: np.ndarray, row_axes: int,
                    top: int = 0, left: int = 0, band: int = 1, canvas: Canvas | None = None) -> None:
        """Resize the RGB ``image`` (or uint8 ``(H, W, 3)`` pixels) to ``size = (width, height)``
        (bicubic), normalise, and write
        the window at ``(top, left)`` into ``dst``.

        ``dst`` is a float32 view of shape ``(copies, C, *rows, *cols)``, ``len(rows) == row_axes``:
        window row ``y`` goes to the C-order position ``y`` of ``rows`` (columns likewise), the
        same values to each copy. A view of tiles or patches puts the model's layout in this pass;
        ``band`` (the patch size for patches) is how many rows the kernel writes together.
        With ``canvas`` (kernel only) the image placed on that canvas is what is resized.
        """
        copies, channels, *dims = dst.shape
        rows, cols = dims[:row_axes], dims[row_axes:]
        height, width = math.prod(rows), math.prod(cols)
        kernel = native()
        if kernel is None:
            if canvas is not None:
                raise ValueError("resize_into: a virtual canvas needs the resize kernel")
            image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
            pixels = np.asarray(image.resize(size, Image.BICUBIC))[top : top + height, left : left + width]
            dst[...] = self(pixels).reshape(channels, *rows, *cols)
            return
        strides = [s // dst.itemsize for s in dst.strides]
        kernel.resize_normalize(image_pixels(image), size, (top, left, height, width), self.table, dst,
                                _offsets(rows, strides[2 : 2 + row_axes]), _offsets(cols, strides[2 + row_axes :]),
                                strides[1], copies, strides[0], band, canvas)


def support_bounds(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The input range ``[start, stop)`` each output index of Pillow's bicubic resize reads."""
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)
    center = (np.arange(out_size) + 0.5) * scale
    start = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    return start, np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)


@functools.lru_cache(maxsize=512)
def _support_bounds(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`support_bounds`, kept per (side, size) and read-only."""
    bounds = support_bounds(in_size, out_size)
    for b in bounds:
        b.flags.writeable = False
    return bounds


def to_rgb(image: Image.Image) -> Image.Image:
    """The image in mode RGB (``image.convert("RGB")``, as transformers' ``convert_to_rgb``)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str) -> Image.Image:
    """Open an image as RGB, decoding it fully so a corrupt file fails here."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


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
        image, s = to_rgb(image), self.tile_size
        if not self.dynamic:
            tiles = batch_empty((1, 3, s, s), np.float32)
            self.normalize.resize_into(image, (s, s), tiles, 1)
            return tiles
        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        cols, rows = closest_tile_grid(image.width, image.height, s, self.min_tiles, max_tiles)
        thumbnail = self.use_thumbnail and rows * cols > 1
        tiles = batch_empty((rows * cols + thumbnail, 3, s, s), np.float32)
        canvas = tiles[: rows * cols].reshape(rows, cols, 3, s, s).transpose(2, 0, 3, 1, 4)  # (3, rows, s, cols, s)
        self.normalize.resize_into(image, (cols * s, rows * s), canvas[None], 2)
        if thumbnail:
            self.normalize.resize_into(image, (s, s), tiles[-1:], 1)
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
        t, p, m, c = self.temporal_patch_size, self.patch_size, self.merge_size, 3
        grid_t, grid_h, grid_w = -(-len(frames) // t), height // p, width // p
        patches = batch_empty((grid_t * grid_h * grid_w, c * t * p * p), np.float32)
        # rows (t, h/m, w/m, m, m) x columns (C, T, P, P), seen as (t, T, C, h/m, m, P, w/m, m, P)
        view = patches.reshape(grid_t, grid_h // m, grid_w // m, m, m, c, t, p, p).transpose(0, 6, 5, 1, 3, 7, 2, 4, 8)
        for i, frame in enumerate(frames):
            group, slot = divmod(i, t)
            # the last frame fills the temporal slots after it too: an image's T copies, a video's padding
            end = t if i == len(frames) - 1 else slot + 1
            self.normalize.resize_into(to_rgb(frame), (width, height), view[group, slot:end], 3, band=p)
        return patches, (grid_t, grid_h, grid_w)


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
        self._background_values = self.normalize.table[np.arange(3), self.background][:, None, None]  # (3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = to_rgb(image)
        if self.pad and image.width != image.height:
            if native() is not None:
                return self._padded(image)
            image = pad_to_square(image, self.background)
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.size, int(self.size * long / short)
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        top, left = (new_size[1] - self.crop_size) // 2, (new_size[0] - self.crop_size) // 2
        if top < 0 or left < 0:
            raise ValueError(f"resized image {new_size} is smaller than the crop {self.crop_size}")
        out = batch_empty((1, 3, self.crop_size, self.crop_size), np.float32)
        self.normalize.resize_into(image, new_size, out, 1, top, left)
        return out[0]

    def _padded(self, image: Image.Image) -> np.ndarray:
        """pad-to-square, resize and crop, resampling only the image's footprint: an output pixel
        whose filter support lies in the padding is the background colour exactly (the fixed-point
        weights sum to one within far less than half a level), so it is filled, not computed. The
        square canvas is not built: the kernel reads the image where it lies on it and the
        background elsewhere."""
        width, height = image.size
        side, s, crop = max(width, height), self.size, self.crop_size
        top, left = (side - height) // 2, (side - width) // 2
        out = batch_empty((1, 3, crop, crop), np.float32)
        out[0] = self._background_values
        offset = (s - crop) // 2  # the centre crop of the (s, s) resize
        start, stop = _support_bounds(side, s)
        live = []
        for lo, n in ((top, height), (left, width)):
            inside = np.flatnonzero((stop > lo) & (start < lo + n))
            first, last = max(inside[0], offset), min(inside[-1] + 1, offset + crop)
            live.append(slice(first - offset, max(first, last) - offset))
        rows, cols = live
        if rows.stop > rows.start and cols.stop > cols.start:
            self.normalize.resize_into(image, (s, s), out[:, :, rows, cols], 1, rows.start + offset, cols.start + offset,
                                       canvas=Canvas(side, side, top, left, bytes(self.background)))
        return out[0]
