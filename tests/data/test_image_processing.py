"""Image preprocessing equals the HF processors of transformers 4.53 (slow, PIL-based ones)."""
import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor, GotOcr2ImageProcessor, LlavaImageProcessor, Qwen2VLImageProcessor

from msmm.data.image_processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLIPImageTransform,
    InternVLImageTransform,
    Qwen2VLImageTransform,
    closest_tile_grid,
)

# (width, height): square, landscape, portrait, tiny, extreme aspect ratios, exact 5:4 and 2:1
SIZES = [(448, 448), (1000, 700), (300, 900), (37, 23), (1600, 120), (560, 448), (896, 448), (50, 1200), (641, 479)]


def _image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) % 256)], -1)
    noisy = smooth + rng.integers(-40, 40, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("max_tiles", [1, 6, 12])
def test_internvl_tiles_equal_gotocr2(max_tiles):
    ref = GotOcr2ImageProcessor(
        size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=max_tiles,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )
    ours = InternVLImageTransform(448, min_tiles=1, max_tiles=max_tiles)
    for i, (w, h) in enumerate(SIZES):
        image = _image(w, h, i)
        expected = ref(images=image, return_tensors="np")
        got = ours(image)
        assert got.shape == expected["pixel_values"].shape, (w, h)
        assert int(expected["num_patches"][0]) == got.shape[0]
        np.testing.assert_array_equal(got, expected["pixel_values"])


def test_closest_grid_tie_prefers_more_tiles_only_for_large_images():
    # with at most 2 tiles, aspect 1.5 is equally far (0.5) from the 1:1 and 2:1 grids
    assert closest_tile_grid(1500, 1000, 448, 1, 2) == (2, 1)  # more than half of 2 tiles' area
    assert closest_tile_grid(150, 100, 448, 1, 2) == (1, 1)  # a small image keeps one tile
    assert closest_tile_grid(1500, 1000, 448, 1, 12) == (3, 2)


def test_qwen2vl_patches_equal_hf():
    kwargs = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    ref = Qwen2VLImageProcessor(**kwargs)
    ours = Qwen2VLImageTransform(**kwargs)
    for i, (w, h) in enumerate(SIZES[:-2]):
        image = _image(w, h, 10 + i)
        expected = ref(images=image, return_tensors="np")
        patches, grid = ours(image)
        assert list(grid) == expected["image_grid_thw"][0].tolist(), (w, h)
        np.testing.assert_array_equal(patches, expected["pixel_values"])


def test_qwen2vl_video_frames_equal_hf_with_temporal_padding():
    ref = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    ours = Qwen2VLImageTransform(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    frames = [_image(160, 120, 30 + k) for k in range(5)]  # odd count: last frame repeated
    expected = ref(images=None, videos=[frames], return_tensors="np")
    patches, grid = ours.frames(frames)
    assert list(grid) == expected["video_grid_thw"][0].tolist() and grid[0] == 3
    np.testing.assert_array_equal(patches, expected["pixel_values_videos"])


@pytest.mark.parametrize("pad", [False, True])
def test_clip_equals_hf(pad):
    if pad:
        ref = LlavaImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)
    else:
        ref = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    ours = CLIPImageTransform(336, 336, pad_to_square=pad)
    for i, (w, h) in enumerate(SIZES):
        image = _image(w, h, 20 + i)
        expected = ref(images=image, return_tensors="np")["pixel_values"][0]
        np.testing.assert_array_equal(ours(image), expected)
