"""Random tensors of adapters.torch, seeded by ``manual_seed``.

The numbers are MindSpore's (torch's Philox/MT stream cannot be reproduced); what holds
is torch's contract: same seed, same numbers; shapes, dtypes and distributions as torch.
A graph compiled by ``mindspore.jit`` draws its random state when it is compiled:
``manual_seed`` afterwards does not rewind it (compile again to replay a stream).
"""
from __future__ import annotations

import mindspore
from mindspore import mint, ops

from ._creation import _size
from ._dispatch import kernel, register

__all__ = ["manual_seed", "initial_seed", "rand", "randn", "randint", "rand_like",
           "randn_like", "randint_like", "normal", "randperm", "bernoulli"]

_DEFAULT_FLOAT = mindspore.float32
_seed = [0]


def manual_seed(seed: int) -> None:
    """Seed every random op that runs (or is compiled) from now on."""
    _seed[0] = int(seed)
    mindspore.set_seed(int(seed))


def initial_seed() -> int:
    """The last seed given to :func:`manual_seed` (0 before any)."""
    return _seed[0]


# Legacy ops carry their own CPU kernels (mint.rand/randn/randint have none on CPU).
@register("rand", "CPU")
def _rand_cpu(shape, dtype):
    return ops.uniform(shape, mindspore.Tensor(0.0, mindspore.float32),
                       mindspore.Tensor(1.0, mindspore.float32)).astype(dtype)


@register("rand", "Ascend", tested=False)
def _rand_ascend(shape, dtype):
    return mint.rand(shape, dtype=dtype)


@register("randn", "CPU")
def _randn_cpu(shape, dtype):
    return ops.standard_normal(shape).astype(dtype)


@register("randn", "Ascend", tested=False)
def _randn_ascend(shape, dtype):
    return mint.randn(shape, dtype=dtype)


@register("randint", "CPU")
def _randint_cpu(low, high, shape, dtype):
    return ops.randint(low, high, shape).astype(dtype)


@register("randint", "Ascend", tested=False)
def _randint_ascend(low, high, shape, dtype):
    return mint.randint(low, high, shape, dtype=dtype)


_rand, _randn, _randint = kernel("rand"), kernel("randn"), kernel("randint")


def rand(*size, generator=None, dtype=None, device=None, requires_grad: bool = False,
         pin_memory: bool = False):
    """Uniform on [0, 1)."""
    return _rand(_size(size), _DEFAULT_FLOAT if dtype is None else dtype)


def randn(*size, generator=None, dtype=None, device=None, requires_grad: bool = False,
          pin_memory: bool = False):
    """Standard normal."""
    return _randn(_size(size), _DEFAULT_FLOAT if dtype is None else dtype)


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad: bool = False):
    """Integers in [low, high): ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    return _randint(low, high, tuple(size), mindspore.int64 if dtype is None else dtype)


def rand_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None):
    return _rand(input.shape, input.dtype if dtype is None else dtype)


def randn_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None):
    return _randn(input.shape, input.dtype if dtype is None else dtype)


def randint_like(input, low, high=None, *, dtype=None, device=None, requires_grad: bool = False,
                 memory_format=None):
    if high is None:
        low, high = 0, low
    return _randint(low, high, input.shape, input.dtype if dtype is None else dtype)


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None,
           requires_grad: bool = False):
    """``normal(mean, std)`` with tensor or float mean/std (broadcast), or floats and ``size``."""
    if isinstance(mean, mindspore.Tensor) or isinstance(std, mindspore.Tensor):
        like = mean * 0 + std * 0  # the broadcast shape and promoted dtype
        return _randn(like.shape, like.dtype) * std + mean
    out_dtype = _DEFAULT_FLOAT if dtype is None else dtype
    return _randn(tuple(size), out_dtype) * std + mean


def randperm(n: int, *, generator=None, dtype=None, device=None, requires_grad: bool = False):
    """A random permutation of ``range(n)`` (argsort of uniform noise)."""
    order = ops.sort(_rand((n,), _DEFAULT_FLOAT))[1]
    return order.astype(mindspore.int64 if dtype is None else dtype)


def bernoulli(input, p=None, *, generator=None):
    """1 with probability ``input`` (or ``p``), else 0, in ``input``'s dtype."""
    prob = input if p is None else p
    return (_rand(input.shape, _DEFAULT_FLOAT) < prob).astype(input.dtype)
