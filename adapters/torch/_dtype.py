"""torch dtypes as MindSpore dtypes, and ``finfo`` / ``iinfo``."""
from __future__ import annotations

import builtins

import mindspore
import numpy as np

float32 = float = mindspore.float32
float64 = double = mindspore.float64
float16 = half = mindspore.float16
bfloat16 = mindspore.bfloat16
int64 = long = mindspore.int64
int32 = int = mindspore.int32
int16 = short = mindspore.int16
int8 = mindspore.int8
uint8 = mindspore.uint8
bool = mindspore.bool_
complex64 = mindspore.complex64

dtype = mindspore.dtype.Type

_FLOATING = (mindspore.float16, mindspore.bfloat16, mindspore.float32, mindspore.float64)

# bf16 limits, which numpy has no type for: 8 exponent bits, 7 mantissa bits
_BF16 = dict(bits=16, eps=2.0**-7, max=3.3895313892515355e38, min=-3.3895313892515355e38,
             tiny=2.0**-126, smallest_normal=2.0**-126, resolution=0.01)


def is_floating_point(x) -> bool:
    return x.dtype in _FLOATING


def is_tensor(obj) -> bool:
    return isinstance(obj, mindspore.Tensor)


def get_default_dtype():
    """float32: adapters creates floating tensors in float32 (no set_default_dtype)."""
    return float32


class finfo:
    """Machine limits of a floating dtype, as ``torch.finfo``."""

    def __init__(self, type=None):
        type = mindspore.float32 if type is None else type
        if type == mindspore.bfloat16:
            values = _BF16
        else:
            info = np.finfo(mindspore.dtype_to_nptype(type))
            values = dict(bits=info.bits, eps=builtins.float(info.eps), max=builtins.float(info.max),
                          min=builtins.float(info.min), tiny=builtins.float(info.tiny),
                          smallest_normal=builtins.float(info.smallest_normal),
                          resolution=builtins.float(info.resolution))
        self.dtype = type
        for key, value in values.items():
            setattr(self, key, value)


class iinfo:
    """Machine limits of an integer dtype, as ``torch.iinfo``."""

    def __init__(self, type):
        info = np.iinfo(mindspore.dtype_to_nptype(type))
        self.dtype = type
        self.bits = info.bits
        self.min = builtins.int(info.min)
        self.max = builtins.int(info.max)

