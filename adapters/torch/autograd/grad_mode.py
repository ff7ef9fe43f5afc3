"""Grad modes: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``.

MindSpore has no global autograd tape to switch off in graph mode: gradients there are
whatever ``mindspore.grad`` / ``value_and_grad`` differentiate. So:

* PyNative: the modes switch MindSpore's PyNative grad recording
  (``_pynative_executor.set_enable_grad``), so ops run inside ``no_grad`` are not
  recorded and contribute no gradient, as in torch.
* Graph mode (inside ``mindspore.jit``): ``with torch.no_grad():`` compiles (the
  managers are ``jit_class`` objects whose ``__enter__``/``__exit__`` are no-ops there)
  and does not stop gradients by itself: ``auto_convert`` wraps every value assigned or
  returned where gradients are off in :func:`no_grad_value`, a stop-gradient in both
  modes (code not converted by auto_convert uses ``Tensor.detach()``).
"""
from __future__ import annotations

import functools
from typing import Callable

import mindspore
from mindspore.graph.api import _pynative_executor
from mindspore.ops.primitive import constexpr

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled",
           "is_inference_mode_enabled", "no_grad_value"]


def _probe():
    return 0


@constexpr(check=False)
def _is_none(value) -> bool:
    return value is None


def _run_in_jit() -> bool:
    """True while graph mode compiles the caller (a function is no constant there), else False."""
    return _is_none(_probe)


def is_grad_enabled() -> bool:
    """Whether PyNative records ops for differentiation (torch's default: True). Inside a
    compiled graph: True (what the graph computes is differentiated unless stopped)."""
    if _run_in_jit():
        return True
    return bool(_pynative_executor.enable_grad())


def _set_enabled(enabled: bool) -> None:
    _pynative_executor.set_enable_grad(bool(enabled))


class _GradMode:
    """Context manager and decorator setting the grad mode to ``self.enabled``."""

    enabled = True

    def __init__(self):
        self.prev = True

    def __enter__(self):
        if not _run_in_jit():
            self.prev = is_grad_enabled()
            _set_enabled(self.enabled)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        if not _run_in_jit():
            _set_enabled(self.prev)
        return False

    def __call__(self, fn: Callable) -> Callable:
        """Decorator use: ``fn`` runs in this mode, the previous mode is restored after."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = is_grad_enabled()
            _set_enabled(self.enabled)
            try:
                return fn(*args, **kwargs)
            finally:
                _set_enabled(prev)

        return wrapper


@mindspore.jit_class
class no_grad(_GradMode):
    """``torch.no_grad()``: ops run inside are not recorded for gradients (PyNative)."""

    enabled = False


@mindspore.jit_class
class enable_grad(_GradMode):
    """``torch.enable_grad()``: re-enables recording inside a ``no_grad`` region."""

    enabled = True


@mindspore.jit_class
class set_grad_enabled(_GradMode):
    """``torch.set_grad_enabled(mode)``: sets the mode at once, and restores it on exit
    when used as a context manager."""

    def __init__(self, mode: bool):
        super().__init__()
        self.prev = is_grad_enabled()
        self.enabled = bool(mode)
        _set_enabled(self.enabled)

    def __enter__(self):
        return self

    def __call__(self, fn: Callable) -> Callable:
        _set_enabled(self.prev)  # as a decorator, the mode applies to calls of fn only
        return super().__call__(fn)


@mindspore.jit_class
class inference_mode(_GradMode):
    """``torch.inference_mode(mode=True)``: ``no_grad`` (MindSpore has no separate
    inference tensors, so this is exactly ``no_grad`` when ``mode`` is true)."""

    def __init__(self, mode: bool = True):
        super().__init__()
        self.enabled = not mode


def is_inference_mode_enabled() -> bool:
    """MindSpore has no inference tensors: always False."""
    return False


def no_grad_value(value):
    """``value`` computed where gradients are off, with its gradient stopped in both modes:
    what ``auto_convert`` wraps around values assigned or returned inside ``no_grad``
    (graph mode compiles the context managers as no-ops). Tensors are stopped, tuples
    element by element (one level); anything else is returned as it is."""
    if isinstance(value, tuple):
        out = ()
        for item in value:
            out = out + (_stopped(item),)
        return out
    return _stopped(value)


def _stopped(value):
    return mindspore.ops.stop_gradient(value) if isinstance(value, mindspore.Tensor) else value
