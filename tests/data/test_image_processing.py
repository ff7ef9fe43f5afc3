"""Image preprocessing equals the HF processors of transformers 4.53 (slow, PIL-based ones) bit
for bit, with the resize kernel (msmm/data/csrc/resize.cpp) and with its PIL fallback; the
kernel equals the installed Pillow's bicubic resize."""
import ctypes
import functools
import os

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor, GotOcr2ImageProcessor, LlavaImageProcessor, Qwen2VLImageProcessor

from adapters.kernels import build
from msmm.data import image_processing, resize
from msmm.data.image_processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLIPImageTransform,
    InternVLImageTransform,
    Qwen2VLImageTransform,
    closest_tile_grid,
)

# (width, height): square, landscape, portrait, tiny, extreme aspect ratios, exact 5:4 and 2:1, odd
SIZES = [(448, 448), (1000, 700), (300, 900), (37, 23), (1600, 120), (560, 448), (896, 448), (50, 1200), (641, 479)]
# non-RGB inputs, converted as transformers' convert_to_rgb does (image.convert("RGB"))
MODES = ["RGBA", "L", "P", "LA", "CMYK"]


def _image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) % 256)], -1)
    noisy = smooth + rng.integers(-40, 40, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _inputs(seed):
    """SIZES as RGB images, then one image per non-RGB mode (RGBA with a varying alpha)."""
    images = [_image(w, h, seed + i) for i, (w, h) in enumerate(SIZES)]
    for i, mode in enumerate(MODES):
        base = _image(211 + 37 * i, 157 + 53 * i, seed + 100 + i)
        if mode in ("RGBA", "LA"):
            base.putalpha(Image.fromarray(np.arange(base.width * base.height, dtype=np.uint8).reshape(base.height, base.width)))
        images.append(base.convert(mode))
    return images


@pytest.fixture(params=["kernel", "pil"])
def path(request, monkeypatch):
    """Run a test with the resize kernel, then with the PIL fallback (no compiler / MSMM_FUSED_KERNELS=0)."""
    if request.param == "kernel":
        if resize.native() is None:
            pytest.skip("resize kernel off (MSMM_FUSED_KERNELS=0) or not buildable here")
    else:
        monkeypatch.setattr(image_processing, "native", lambda: None)
    return request.param


def test_kernel_is_built_and_matches_this_pillow():
    if os.environ.get("MSMM_FUSED_KERNELS") == "0":
        pytest.skip("MSMM_FUSED_KERNELS=0")
    kernel = resize.native()
    assert kernel is not None, "the resize kernel did not build or does not reproduce this Pillow"
    pillow13 = int(Image.__version__.split(".")[0]) >= 13
    assert kernel.order == (1 if pillow13 else 0)  # Pillow 13 runs the vertical pass first on tall reductions


def test_kernel_off_by_environment(monkeypatch):
    monkeypatch.setenv("MSMM_FUSED_KERNELS", "0")
    assert resize.native.__wrapped__() is None


ISAS = ("native", "no_avx512")


@functools.lru_cache(maxsize=None)
def kernel_for(isa: str):
    """The resize kernel as this machine builds it, or built without AVX-512 (``-mno-avx512f``:
    the SSE/AVX2 paths a CPU without AVX-512 compiles), or None when the kernel is off."""
    if resize.native() is None:
        return None
    if isa == "native":
        return resize.native()
    library = ctypes.CDLL(str(build.compile_source(resize.SOURCE, (*resize.FLAGS, "-mno-avx512f"))))
    order = resize._pass_order(library)
    assert order is not None, "the resize kernel built without AVX-512 does not reproduce this Pillow"
    return resize.NativeResize(library, order)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", range(4))
def test_resize_kernel_equals_pillow(seed, isa):
    """Random sizes (up and down, extreme aspect ratios, 1 px sides, both pass orders), whole
    images and crop windows, 1, 3 or 4 channels: equal to Image.resize(size, BICUBIC), every byte."""
    kernel = kernel_for(isa)
    if kernel is None:
        pytest.skip("resize kernel off")
    rng = np.random.default_rng(seed)
    for case in range(40):
        channels = (1, 4)[case % 2] if case % 5 == 0 else 3
        in_w, in_h = (int(v) for v in rng.integers(1, 400, 2))
        out_w, out_h = (int(v) for v in rng.integers(1, 400, 2))
        if case % 3 == 0:
            out_h = int(rng.integers(1, 12))  # a strong vertical reduction: vertical pass first on Pillow 13
        pixels = rng.integers(0, 256, (in_h, in_w, channels), np.uint8)
        mode = {1: "L", 3: "RGB", 4: "RGBX"}[channels]  # RGBX: 4 bands resized without alpha premultiplication
        image = Image.frombytes(mode, (in_w, in_h), pixels.tobytes())
        expected = np.asarray(image.resize((out_w, out_h), Image.BICUBIC)).reshape(out_h, out_w, channels)
        np.testing.assert_array_equal(kernel.resize(pixels, (out_w, out_h)), expected, err_msg=f"{in_w}x{in_h} -> {out_w}x{out_h}")
        top, left = int(rng.integers(0, out_h)), int(rng.integers(0, out_w))
        height, width = int(rng.integers(1, out_h - top + 1)), int(rng.integers(1, out_w - left + 1))
        window = kernel.resize(pixels, (out_w, out_h), (top, left, height, width))
        np.testing.assert_array_equal(window, expected[top : top + height, left : left + width])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", range(3))
def test_resize_kernel_canvas_and_rgbx_equal_pillow(seed, isa):
    """The image read where it lies on a virtual canvas of a background colour (LLaVA's
    pad-to-square, never built) and read from Pillow's own RGBX memory (pixels 4 bytes apart):
    equal to pasting it on the canvas and Image.resize(size, BICUBIC), every byte, whole and
    windowed, up and down, both pass orders, images touching and not touching the borders."""
    kernel = kernel_for(isa)
    if kernel is None:
        pytest.skip("resize kernel off")
    rng = np.random.default_rng(100 + seed)
    for case in range(40):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        canvas_h, canvas_w = h + int(rng.integers(0, 200)), w + int(rng.integers(0, 200))
        top, left = int(rng.integers(0, canvas_h - h + 1)), int(rng.integers(0, canvas_w - w + 1))
        background = bytes(int(v) for v in rng.integers(0, 256, 3))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
        canvas = Image.new("RGB", (canvas_w, canvas_h), tuple(background))
        canvas.paste(image, (left, top))
        out_w, out_h = (int(v) for v in rng.integers(1, 400, 2))
        if case % 4 == 0:
            out_h = int(rng.integers(1, 12))  # vertical pass first on Pillow 13
        if case % 7 == 0:
            out_w = canvas_w  # no horizontal pass
        expected = np.asarray(canvas.resize((out_w, out_h), Image.BICUBIC))
        y0, x0 = int(rng.integers(0, out_h)), int(rng.integers(0, out_w))
        window = (y0, x0, int(rng.integers(1, out_h - y0 + 1)), int(rng.integers(1, out_w - x0 + 1)))
        place = resize.Canvas(canvas_h, canvas_w, top, left, background)
        for pixels in (np.asarray(image), resize.pixels(image)):
            got = kernel.resize(pixels, (out_w, out_h), window, place)
            np.testing.assert_array_equal(got, expected[y0 : y0 + window[2], x0 : x0 + window[3]],
                                          err_msg=f"{w}x{h} at {left},{top} on {canvas_w}x{canvas_h} -> {out_w}x{out_h}")
        np.testing.assert_array_equal(kernel.resize(resize.pixels(canvas), (out_w, out_h)), expected)


def test_pixels_reads_the_image_memory():
    """resize.pixels: a read-only view of the image's RGBX memory when Pillow exports it (one
    block), np.asarray's copy otherwise (an image over 16 MB); the same values either way."""
    small, large = _image(300, 200, 7), _image(2500, 1700, 8)
    view = resize.pixels(small)
    np.testing.assert_array_equal(view, np.asarray(small))
    assert not view.flags.writeable
    if hasattr(small, "__arrow_c_array__"):  # Pillow >= 11.2
        assert view.strides[1] == 4
    np.testing.assert_array_equal(resize.pixels(large), np.asarray(large))
    del small  # the view holds the image's memory
    np.testing.assert_array_equal(view[:2, :2], np.asarray(_image(300, 200, 7))[:2, :2])


def test_resize_function_equals_pillow(path):
    for i, (w, h) in enumerate(SIZES):
        image = _image(w, h, 40 + i)
        np.testing.assert_array_equal(resize.resize(image, (333, 251)), np.asarray(image.resize((333, 251), Image.BICUBIC)))


@pytest.mark.parametrize("max_tiles", [1, 6, 12])
def test_internvl_tiles_equal_gotocr2(max_tiles, path):
    ref = GotOcr2ImageProcessor(
        size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=max_tiles,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )
    ours = InternVLImageTransform(448, min_tiles=1, max_tiles=max_tiles)
    for image in _inputs(0):
        expected = ref(images=image, return_tensors="np")
        got = ours(image)
        assert int(expected["num_patches"][0]) == got.shape[0]
        np.testing.assert_array_equal(got, expected["pixel_values"], err_msg=f"{image.mode} {image.size}")


def test_internvl_fixed_size_equals_gotocr2(path):
    ref = GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=False,
                                image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    ours = InternVLImageTransform(448, dynamic=False)
    for image in _inputs(50)[:4]:
        np.testing.assert_array_equal(ours(image), ref(images=image, return_tensors="np")["pixel_values"])


def test_closest_grid_tie_prefers_more_tiles_only_for_large_images():
    # with at most 2 tiles, aspect 1.5 is equally far (0.5) from the 1:1 and 2:1 grids
    assert closest_tile_grid(1500, 1000, 448, 1, 2) == (2, 1)  # more than half of 2 tiles' area
    assert closest_tile_grid(150, 100, 448, 1, 2) == (1, 1)  # a small image keeps one tile
    assert closest_tile_grid(1500, 1000, 448, 1, 12) == (3, 2)


def test_qwen2vl_patches_equal_hf(path):
    kwargs = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    ref = Qwen2VLImageProcessor(**kwargs)
    ours = Qwen2VLImageTransform(**kwargs)
    for image in _inputs(10):
        expected = ref(images=image, return_tensors="np")
        patches, grid = ours(image)
        assert list(grid) == expected["image_grid_thw"][0].tolist(), image.size
        np.testing.assert_array_equal(patches, expected["pixel_values"], err_msg=f"{image.mode} {image.size}")


@pytest.mark.parametrize("count", [4, 5])
def test_qwen2vl_video_frames_equal_hf_with_temporal_padding(count, path):
    ref = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    ours = Qwen2VLImageTransform(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    frames = [_image(160, 120, 30 + k) for k in range(count)]  # odd count: last frame repeated
    expected = ref(images=None, videos=[frames], return_tensors="np")
    patches, grid = ours.frames(frames)
    assert list(grid) == expected["video_grid_thw"][0].tolist() and grid[0] == (count + 1) // 2
    np.testing.assert_array_equal(patches, expected["pixel_values_videos"])


@pytest.mark.parametrize("pad", [False, True])
def test_clip_equals_hf(pad, path):
    if pad:
        ref = LlavaImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)
    else:
        ref = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    ours = CLIPImageTransform(336, 336, pad_to_square=pad)
    for image in _inputs(20):
        expected = ref(images=image, return_tensors="np")["pixel_values"][0]
        np.testing.assert_array_equal(ours(image), expected, err_msg=f"{image.mode} {image.size}")
