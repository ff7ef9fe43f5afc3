"""Helpers to call the fused CPU kernels through ``mindspore.ops.Custom`` (func_type ``aot``).

A kernel is a C function of ``csrc/<library>.cpp`` with the AOT ABI

    extern "C" int Fn(int nparam, void** params, int* ndims, int64_t** shapes,
                      const char** dtypes, void* stream, void* extra);

whose ``params`` are the inputs then the outputs; it returns 0. Shape and dtype inference
and the ``bprop`` are named Python functions (graph mode cannot parse lambdas there).
Scalars (``eps``) travel as a one-element float32 tensor input made by :func:`scalar`.
"""
from __future__ import annotations

from typing import Callable, Optional

import mindspore
from mindspore import Tensor, ops
from mindspore.ops import constexpr

# Compiler flags of a kernel library that splits its work with csrc/parallel.h (helper
# threads that sleep between calls) and vectorises with `#pragma omp simd`.
THREADED = ("-fopenmp-simd", "-pthread")

# Compiler flags of a kernel library that uses OpenMP threads. Beware: `import mindspore`
# loads libgomp before any kernel library, so OMP_WAIT_POLICY cannot be set from here, and
# libgomp's default spins a worker for ~3 ms after every parallel region (3.4 ms of CPU per
# region, measured), on the core MindSpore runs its next kernel on. Prefer THREADED.
OPENMP = ("-fopenmp",)


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
