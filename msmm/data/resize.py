"""Bicubic resize of 8-bit images equal, bit for bit, to Pillow's ``Image.resize(size, BICUBIC)``,
optionally fused with rescale + normalise and the model's tensor layout.

The work is done by ``csrc/resize.cpp`` (Pillow's own fixed-point algorithm, vectorised),
compiled once per machine by ``adapters.kernels.build`` and called through ctypes. On first
use its output is checked against the installed Pillow (whose pass order changed in 13.0);
when the kernel cannot be built (no compiler), is turned off (``MSMM_FUSED_KERNELS=0``) or
does not reproduce the installed Pillow (Pillow-SIMD, say), :func:`native` is None and the
callers resize with PIL instead, with the same results.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from adapters.kernels.build import BuildError, compile_source, enabled

SOURCE = Path(__file__).resolve().parent / "csrc" / "resize.cpp"
FLAGS = ("-ffp-contract=off",)  # the weights must be computed in plain double arithmetic, as Pillow does

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
# image (src, h, w, row stride, pixel stride, channels), canvas (h, w, top, left, background),
# resize (out h, out w), window (y0, y1, x0, x1), pass order
_GEOMETRY = [_PTR, *[_I64] * 5, *[_I64] * 4, _PTR, *[_I64] * 6, ctypes.c_int]


class Canvas(NamedTuple):
    """The image placed at ``(top, left)`` on a ``height x width`` canvas of ``background``
    (one byte per channel): what is resized, without building it (LLaVA's pad-to-square)."""

    height: int
    width: int
    top: int
    left: int
    background: bytes


class NativeResize:
    """The compiled kernel. ``order`` is Pillow's pass order: 0 horizontal first (Pillow < 13),
    1 vertical first when the height shrinks by more than twice the width (Pillow 13)."""

    def __init__(self, library: ctypes.CDLL, order: int) -> None:
        self.order = order
        self._u8 = library.msmm_resize_u8
        self._u8.argtypes, self._u8.restype = [*_GEOMETRY, _PTR], ctypes.c_int
        self._normalize = library.msmm_resize_normalize
        self._normalize.argtypes = [*_GEOMETRY, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64]
        self._normalize.restype = ctypes.c_int

    def _geometry(self, pixels: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int],
                  canvas: Optional[Canvas]) -> list:
        """``pixels``: uint8 ``(H, W, C)``, channels contiguous, pixels ``P >= C`` bytes apart (an RGB
        view of RGBX storage reads as it is), rows apart by at least ``W * P`` bytes."""
        if (pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.strides[2] != 1
                or pixels.strides[1] < pixels.shape[2] or pixels.strides[0] < pixels.shape[1] * pixels.strides[1]):
            raise ValueError(f"expected uint8 (H, W, C) pixels with contiguous pixels and rows, got {pixels.dtype} "
                             f"{pixels.shape} strides {pixels.strides}")
        height, width, channels = pixels.shape
        if canvas is None:
            place = [height, width, 0, 0, None]
        else:
            if len(canvas.background) != channels:
                raise ValueError(f"background of {len(canvas.background)} bytes for {channels} channels")
            if not (0 <= canvas.top and 0 <= canvas.left and canvas.top + height <= canvas.height
                    and canvas.left + width <= canvas.width):
                raise ValueError(f"a {width}x{height} image at ({canvas.top}, {canvas.left}) is not inside a "
                                 f"{canvas.width}x{canvas.height} canvas")
            place = [canvas.height, canvas.width, canvas.top, canvas.left, bytes(canvas.background)]
        top, left, h, w = window
        return [pixels.ctypes.data, height, width, pixels.strides[0], pixels.strides[1], channels, *place,
                size[1], size[0], top, top + h, left, left + w, self.order]

    def resize(self, pixels: np.ndarray, size: tuple[int, int], window: Optional[tuple[int, int, int, int]] = None,
               canvas: Optional[Canvas] = None) -> np.ndarray:
        """The ``(top, left, height, width)`` window (default: all) of the bicubic resize of
        ``pixels`` (or of ``canvas`` with ``pixels`` on it) to ``size = (width, height)``, uint8
        ``(height, width, C)``."""
        window = window or (0, 0, size[1], size[0])
        out = np.empty((window[2], window[3], pixels.shape[2]), np.uint8)
        _check(self._u8(*self._geometry(pixels, size, window, canvas), out.ctypes.data))
        return out

    def resize_normalize(self, pixels: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int],
                         table: np.ndarray, dst: np.ndarray, row_offsets: np.ndarray, col_offsets: np.ndarray,
                         channel_stride: int, copies: int, copy_stride: int, band: int = 1,
                         canvas: Optional[Canvas] = None) -> None:
        """Window pixel ``(y, x)``, channel ``c``, value ``v`` -> ``table[c, v]`` written at element
        ``row_offsets[y] + col_offsets[x] + c * channel_stride + t * copy_stride`` of ``dst``'s
        data, ``t < copies``; the caller vouches that these stay inside ``dst``. Rows are written
        ``band`` at a time, run of consecutive columns by run (the patch size writes patches in
        memory order)."""
        if table.dtype != np.float32 or not table.flags.c_contiguous or table.shape != (pixels.shape[2], 256):
            raise ValueError(f"expected a contiguous float32 ({pixels.shape[2]}, 256) table, got {table.dtype} {table.shape}")
        if dst.dtype != np.float32 or not dst.flags.writeable:
            raise ValueError("dst must be a writeable float32 array")
        rows = np.ascontiguousarray(row_offsets, np.int64)
        cols = np.ascontiguousarray(col_offsets, np.int64)
        if rows.shape != (window[2],) or cols.shape != (window[3],):
            raise ValueError(f"{rows.shape} row and {cols.shape} column offsets for a {window[2]} x {window[3]} window")
        _check(self._normalize(*self._geometry(pixels, size, window, canvas), table.ctypes.data, dst.ctypes.data,
                               rows.ctypes.data, cols.ctypes.data, channel_stride, copies, copy_stride, band))


def _check(status: int) -> None:
    if status == -2:
        raise MemoryError("msmm resize: out of memory")
    if status != 0:
        raise ValueError("msmm resize: invalid sizes or window")


def _pass_order(library: ctypes.CDLL) -> Optional[int]:
    """The pass order under which the kernel equals the installed Pillow, or None."""
    pixels = np.random.default_rng(0).integers(0, 256, (61, 37, 3), np.uint8)
    image = Image.fromarray(pixels)
    sizes = [(23, 11), (50, 40), (20, 70), (70, 20)]  # the orders differ on all but (20, 70)
    expected = [np.asarray(image.resize(size, Image.BICUBIC)) for size in sizes]
    for order in (1, 0):
        kernel = NativeResize(library, order)
        if all(np.array_equal(kernel.resize(pixels, s), e) for s, e in zip(sizes, expected)):
            return order
    return None


@functools.lru_cache(maxsize=None)
def native() -> Optional[NativeResize]:
    """The compiled kernel, or None when it is off, cannot be built or differs from Pillow (warned once)."""
    if not enabled():
        return None
    try:
        library = ctypes.CDLL(str(compile_source(SOURCE, FLAGS)))
    except (BuildError, OSError) as error:
        warnings.warn(f"msmm.data.resize: {error}; resizing with PIL instead", RuntimeWarning, stacklevel=2)
        return None
    order = _pass_order(library)
    if order is None:
        warnings.warn(f"msmm.data.resize: the kernel does not reproduce this Pillow's ({Image.__version__}) bicubic "
                      "resize; resizing with PIL instead", RuntimeWarning, stacklevel=2)
        return None
    return NativeResize(library, order)


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                         ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
                         ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))), ("dictionary", _PTR),
                         ("release", _PTR), ("private_data", _PTR)]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                        ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                        ("buffers", ctypes.POINTER(_PTR)), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
                        ("dictionary", _PTR), ("release", _PTR), ("private_data", _PTR)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.argtypes, _capsule_pointer.restype = [ctypes.py_object, ctypes.c_char_p], _PTR


class _ImageMemory:
    """An RGB image's own pixel memory (4 bytes a pixel, RGBX) as numpy sees it, through the Arrow
    C data interface (Pillow >= 11.2); holds the Arrow capsules, which hold the image."""

    def __init__(self, image: Image.Image) -> None:
        self._capsules = schema_capsule, array_capsule = image.__arrow_c_array__()
        schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
        array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
        width, height = image.size
        if (schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C"
                or array.n_children != 1 or array.length != width * height or array.null_count):
            raise ValueError(f"unexpected Arrow export of a {image.mode} image")
        child = array.children[0].contents
        if child.n_buffers != 2 or child.null_count or child.length < (array.offset + array.length) * 4:
            raise ValueError(f"unexpected Arrow export of a {image.mode} image")
        data = child.buffers[1] + child.offset + array.offset * 4
        self.__array_interface__ = {"shape": (height, width, 4), "typestr": "|u1", "data": (data, True), "version": 3}


def pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` pixels of an RGB image for the kernel, without copying them when
    Pillow exports its memory (Arrow, one memory block: images up to 16 MB): a read-only view
    of the RGBX storage, pixels 4 bytes apart. Otherwise ``np.asarray(image)`` (a copy)."""
    if isinstance(image, np.ndarray):
        return image
    if image.mode == "RGB" and hasattr(image, "__arrow_c_array__"):
        try:
            return np.asarray(_ImageMemory(image))[:, :, :3]
        except ValueError:  # "Image rows are not contiguous in memory": an image of several blocks
            pass
    return np.asarray(image)


def resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``np.asarray(image.resize(size, Image.BICUBIC))`` for an 8-bit RGB image, ``size = (width, height)``."""
    kernel = native()
    if kernel is None or image.mode != "RGB":
        return np.asarray(image.resize(size, Image.BICUBIC))
    return kernel.resize(pixels(image), size)
