"""Elementwise and reduction math of adapters.torch."""
from mindspore import mint, ops

from ._dispatch import kernel, register

__all__ = ["matmul"]


@register("matmul", "CPU", "Ascend")
def _matmul(input, other):
    return mint.matmul(input, other)


_matmul_kernel = kernel("matmul")


def matmul(input, other):
    return _matmul_kernel(input, other)
