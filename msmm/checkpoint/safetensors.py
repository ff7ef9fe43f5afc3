"""The one safetensors reader and writer: tensors read lazily from memory-mapped files after
the header is validated, files written with a header planned up front and tensors written
one at a time.

Tensors keep their stored dtype bit for bit; BF16 (which numpy lacks) is carried as its
raw 16-bit words (``uint16``) together with the dtype code, so a conversion never rounds.
Peak memory is one tensor (plus its tensor-parallel pieces), never the model.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

# safetensors dtype code -> numpy storage dtype (BF16 as raw uint16 words)
STORAGE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


@dataclass
class Tensor:
    """A tensor to be read on demand: safetensors dtype code, shape and a loader."""

    dtype: str
    shape: Tuple[int, ...]
    load: Callable[[], np.ndarray]
    source: str  # "file:key", for error messages

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(STORAGE[self.dtype]).itemsize

    def numpy(self) -> np.ndarray:
        """The values in memory: floats as float32 (float64 kept; BF16 and F16 widened
        exactly), other dtypes as stored."""
        return np.array(to_float(self.load(), self.dtype) if self.dtype in FLOAT_CODES else self.load())


MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file; the message names the file."""


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """(tensor entries, __metadata__, byte offset where the data starts) of a safetensors file.

    Everything the loaders rely on is checked before a byte of data is read: the header
    length fits the file, the header is a JSON object of entries with a known dtype, a
    shape and ``data_offsets`` whose size is ``prod(shape) * itemsize``, and the entries
    cover the data section exactly once, without overlaps or gaps (as the format requires).
    Errors name the file and the tensor."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{path}: not a safetensors file ({size} bytes, shorter than its 8-byte header length)")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise SafetensorsError(f"{path}: not a safetensors file or truncated (header length {length}, "
                                       f"file size {size} bytes)")
            text = f.read(length)
    except OSError as err:
        raise SafetensorsError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise SafetensorsError(f"{path}: not a safetensors file (bad header: {err})") from err
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: not a safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    _check_entries(path, header, size - start)
    return header, metadata, start


def _check_entries(path: str, header: Dict[str, Any], data_size: int) -> None:
    spans = []
    for key, info in header.items():
        where = f"{path}: tensor {key!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise SafetensorsError(f"{where}: a header entry needs dtype, shape and data_offsets, got {info!r}")
        if info["dtype"] not in STORAGE:
            raise SafetensorsError(f"{where} has unsupported dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                for n in shape)):
            raise SafetensorsError(f"{where}: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise SafetensorsError(f"{where}: bad data_offsets {offsets!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(STORAGE[info["dtype"]]).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise SafetensorsError(f"{where}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, "
                                   f"{info['dtype']}{shape} needs {nbytes}")
        if offsets[1] > data_size:
            raise SafetensorsError(f"{where}: data_offsets {offsets} reach past the end of the file (truncated? "
                                   f"{data_size} data bytes)")
        spans.append((offsets[0], offsets[1], key))
    end = 0
    for begin, stop, key in sorted(spans):
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise SafetensorsError(f"{path}: tensor {key!r} (data_offsets [{begin}, {stop}]) {what}")
        end = stop


def open_file(path: str) -> Dict[str, Tensor]:
    """The tensors of one file, each loaded (as a read-only memory-mapped view) when asked."""
    header, _, start = read_header(path)
    return {key: Tensor(info["dtype"], tuple(info["shape"]), _loader(path, start, info), f"{path}:{key}")
            for key, info in header.items()}


def _loader(path: str, start: int, info: dict) -> Callable[[], np.ndarray]:
    begin, end = info["data_offsets"]
    dtype, shape = np.dtype(STORAGE[info["dtype"]]), tuple(info["shape"])

    def load() -> np.ndarray:
        if end == begin:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)

    return load


FLOAT_CODES = ("F64", "F32", "F16", "BF16")


def to_float(array: np.ndarray, code: str) -> np.ndarray:
    """A float tensor in its storage form -> float64 (F64) or float32 (the rest); BF16 exactly."""
    if code == "BF16":
        return (np.asarray(array, np.uint16).astype(np.uint32) << 16).view(np.float32)
    if code not in FLOAT_CODES:
        raise ValueError(f"dtype {code} is not a float type")
    return np.asarray(array, np.float64 if code == "F64" else np.float32)


def from_float(array: np.ndarray, code: str) -> np.ndarray:
    """float32/64 -> the storage form of ``code``, rounding to nearest even (as torch's ``.to``)."""
    if code != "BF16":
        return np.asarray(array).astype(STORAGE[code])
    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(array), np.uint16(0x7FC0), rounded)


def read_arrays(path: str) -> Dict[str, np.ndarray]:
    """Every tensor of one file as a numpy array in memory: floats as float32 (float64 kept;
    BF16 and F16 widened exactly), other dtypes as stored."""
    return {key: t.numpy() for key, t in open_file(path).items()}


@dataclass
class Entry:
    name: str
    dtype: str
    shape: Tuple[int, ...]


class ShardedWriter:
    """Writes several safetensors files at once. ``plan`` fixes every file's header (names,
    dtypes, shapes) before any data is written; ``write`` then takes each tensor, in the
    planned order per file, and appends its bytes. Files appear under a temporary name and
    are renamed when ``close`` finds every planned tensor written."""

    def __init__(self, plan: Dict[str, Sequence[Entry]], metadata: Optional[Dict[str, str]] = None) -> None:
        self._pending: Dict[str, Iterator[Entry]] = {}
        self._files = {}
        for path, entries in plan.items():
            header, offset = {}, 0
            for e in entries:
                if e.name in header:
                    raise ValueError(f"{path}: tensor {e.name!r} planned twice")
                size = int(np.prod(e.shape, dtype=np.int64)) * np.dtype(STORAGE[e.dtype]).itemsize
                header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + size]}
                offset += size
            if metadata:
                header["__metadata__"] = dict(metadata)
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            f = open(path + ".tmp", "wb")
            f.write(struct.pack("<Q", len(blob)) + blob)
            self._files[path] = f
            self._pending[path] = iter(list(entries))

    def write(self, path: str, name: str, array: np.ndarray) -> None:
        expected = next(self._pending[path], None)
        if expected is None or expected.name != name:
            raise RuntimeError(f"{path}: wrote {name!r}, the plan expects {expected.name if expected else 'nothing'}")
        storage = np.dtype(STORAGE[expected.dtype])
        if array.dtype != storage or tuple(array.shape) != tuple(expected.shape):
            raise RuntimeError(f"{path}: {name!r} is {array.dtype}{array.shape}, planned {storage}{expected.shape}")
        self._files[path].write(np.ascontiguousarray(array).data)  # no copy for contiguous arrays

    def close(self) -> List[str]:
        for path, f in self._files.items():
            f.close()
            left = next(self._pending[path], None)
            if left is not None:
                raise RuntimeError(f"{path}: tensor {left.name!r} was planned but never written")
            os.replace(path + ".tmp", path)
        return list(self._files)

    def abort(self) -> None:
        for path, f in self._files.items():
            f.close()
            if os.path.exists(path + ".tmp"):
                os.remove(path + ".tmp")
