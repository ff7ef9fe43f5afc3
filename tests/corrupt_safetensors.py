"""Corrupt safetensors files, each with what the reader's error says about it (issue 15):
shared by the mm-convert and msmm-train tests."""
from __future__ import annotations

import json
import struct


def safetensors_bytes(header, data: bytes) -> bytes:
    """A safetensors file: 8-byte header length, the header (JSON of ``header``, or raw bytes), data."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


_A = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
CORRUPT = {  # name -> (file content, what the error says after "<file>: ")
    "overlap": (safetensors_bytes({"a": _A, "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}}, bytes(28)),
                "tensor 'b' (data_offsets [8, 20]) overlaps the previous tensor"),
    "gap": (safetensors_bytes({"a": _A, "b": {"dtype": "F32", "shape": [3], "data_offsets": [20, 32]}}, bytes(32)),
            "tensor 'b' (data_offsets [20, 32]) leaves a gap of 4 bytes"),
    "truncated": (safetensors_bytes({"a": _A, "b": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]}}, bytes(24)),
                  "tensor 'b': data_offsets [16, 28] reach past the end of the file (truncated? 24 data bytes)"),
    "huge_header": (struct.pack("<Q", 2**62) + b"{}", "not a safetensors file or truncated (header length "
                                                      f"{2**62}, file size 10 bytes)"),
    "empty": (b"", "not a safetensors file (0 bytes, shorter than its 8-byte header length)"),
    "garbage_header": (safetensors_bytes(b"\xff\xfe{garbage", b""), "not a safetensors file (bad header:"),
    "not_an_object": (safetensors_bytes([1, 2, 3], b""), "not a safetensors file (the header is not a JSON object)"),
}
