"""Helpers to call the fused CPU kernels through ``mindspore.ops.Custom`` (func_type ``aot``).

A kernel is a C function of ``csrc/<library>.cpp`` with the AOT ABI

    extern "C" int Fn(int nparam, void** params, int* ndims, int64_t** shapes,
                      const char** dtypes, void* stream, void* extra);

whose ``params`` are the inputs then the outputs; it returns 0. Shape and dtype inference
and the ``bprop`` are named Python functions (graph mode cannot parse lambdas there).
Scalars (``eps``) travel as a one-element float32 tensor input made by :func:`scalar`.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import mindspore
from mindspore import Tensor, ops
from mindspore.ops import constexpr

# Compiler flags of a kernel library that splits rows over OpenMP threads. Its threads wait
# passively (sleep) between calls instead of spinning for ~0.3 ms, which would steal the
# cores MindSpore's own thread pool runs the next kernel on. libgomp reads the variable
# when it is loaded, i.e. at the first call of such a kernel; a user's setting wins.
OPENMP = ("-fopenmp",)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def custom_op(library: str, function: str, infer_shape: Callable, infer_dtype: Callable,
              bprop: Optional[Callable] = None) -> ops.Custom:
    """The ``ops.Custom`` primitive calling ``function`` of the built ``library`` (a path)."""
    return ops.Custom(f"{library}:{function}", out_shape=infer_shape, out_dtype=infer_dtype,
                      func_type="aot", bprop=bprop)


@constexpr
def scalar(value: float) -> Tensor:
    """``value`` as a one-element float32 tensor, a constant under ``mindspore.jit``."""
    return Tensor([value], mindspore.float32)


def first_shape(*shapes):
    """Shape inference: the output has the first input's shape."""
    return shapes[0]


def first_dtype(*dtypes):
    """Dtype inference: the output has the first input's dtype."""
    return dtypes[0]
