"""adapters.torch: the torch API over MindSpore.

Tensors are MindSpore Tensors, modules are MindSpore Cells, and every function calls
the MindSpore kernel that serves the op on the current device (see ``_dispatch``).
Works in PyNative and under ``mindspore.jit``.
"""
import mindspore as _ms

from ._dtype import (bfloat16, bool, complex64, double, float, float16, float32, float64,  # noqa: A004
                     half, int, int8, int16, int32, int64, long, short, uint8)
from ._dtype import dtype, finfo, get_default_dtype, iinfo, is_floating_point, is_tensor
from ._creation import *  # noqa: F401,F403
from ._math import *  # noqa: F401,F403
from ._shape import *  # noqa: F401,F403
from ._random import *  # noqa: F401,F403
from . import autograd, distributed, nn, tensor_methods, utils  # noqa: E402
from .autograd.grad_mode import (enable_grad, inference_mode, is_grad_enabled,  # noqa: E402
                                 is_inference_mode_enabled, no_grad, set_grad_enabled)
from ._dispatch import DEVICE, UnsupportedOpError  # noqa: E402

Tensor = _ms.Tensor
Size = tuple
__version__ = "2.13.0+msmm"  # the torch API level this shim follows
