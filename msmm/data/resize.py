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
from typing import Optional

import numpy as np
from PIL import Image

from adapters.kernels.build import BuildError, compile_source, enabled

SOURCE = Path(__file__).resolve().parent / "csrc" / "resize.cpp"
FLAGS = ("-ffp-contract=off",)  # the weights must be computed in plain double arithmetic, as Pillow does

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_GEOMETRY = [_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, ctypes.c_int]


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

    def _geometry(self, pixels: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int]) -> list:
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.strides[1:] != (pixels.shape[2], 1):
            raise ValueError(f"expected uint8 (H, W, C) pixels with contiguous rows, got {pixels.dtype} {pixels.shape}")
        top, left, height, width = window
        return [pixels.ctypes.data, *pixels.shape[:2], pixels.strides[0], pixels.shape[2], size[1], size[0],
                top, top + height, left, left + width, self.order]

    def resize(self, pixels: np.ndarray, size: tuple[int, int], window: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
        """The ``(top, left, height, width)`` window (default: all) of the bicubic resize of
        ``pixels`` to ``size = (width, height)``, uint8 ``(height, width, C)``."""
        window = window or (0, 0, size[1], size[0])
        out = np.empty((window[2], window[3], pixels.shape[2]), np.uint8)
        _check(self._u8(*self._geometry(pixels, size, window), out.ctypes.data))
        return out

    def resize_normalize(self, pixels: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int],
                         table: np.ndarray, dst: np.ndarray, row_offsets: np.ndarray, col_offsets: np.ndarray,
                         channel_stride: int, copies: int, copy_stride: int, band: int = 1) -> None:
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
        _check(self._normalize(*self._geometry(pixels, size, window), table.ctypes.data, dst.ctypes.data,
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


def resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``np.asarray(image.resize(size, Image.BICUBIC))`` for an 8-bit RGB image, ``size = (width, height)``."""
    kernel = native()
    if kernel is None or image.mode != "RGB":
        return np.asarray(image.resize(size, Image.BICUBIC))
    return kernel.resize(np.asarray(image), size)
