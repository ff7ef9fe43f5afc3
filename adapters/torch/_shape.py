"""Shape ops of adapters.torch."""
from mindspore import ops

__all__ = ["transpose"]


def transpose(input, dim0: int, dim1: int):
    """Swap two dims (torch meaning; ``Tensor.transpose`` in graph mode is a permutation)."""
    return ops.swapaxes(input, dim0, dim1)
