"""torch.utils.checkpoint over MindSpore recompute (``mindspore.recompute``).

``checkpoint(fn, *args)`` does not keep ``fn``'s activations for backward: they are
recomputed from ``args`` when the gradient is taken. Values and gradients equal those
without checkpointing. PyNative uses MindSpore's non-reentrant recompute (any callable,
Cells included); graph mode uses ``ops.recompute_block``. torch's options
(``use_reentrant``, ``preserve_rng_state``, ``determinism_check``, ``debug``) are
accepted; MindSpore recomputes one way, so they change nothing.
"""
from __future__ import annotations

from typing import Any, Callable

import mindspore

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint(function: Callable, *args, use_reentrant: bool = None, context_fn=None,
               determinism_check: str = "default", debug: bool = False, preserve_rng_state: bool = True,
               **kwargs) -> Any:
    """``function(*args, **kwargs)`` with its activations recomputed in backward."""
    if context_fn is not None:
        raise ValueError("torch.utils.checkpoint: context_fn is not supported")
    return mindspore.recompute(function, *args, use_reentrant=False, **kwargs)


def checkpoint_sequential(functions, segments: int, input, use_reentrant: bool = None, **kwargs):  # noqa: A002
    """Run ``functions`` (a Sequential or a list) in ``segments`` checkpointed chunks."""
    functions = list(functions.children()) if hasattr(functions, "children") else list(functions)
    size = -(-len(functions) // segments)

    def run(start: int, stop: int) -> Callable:
        def chunk(x):
            for fn in functions[start:stop]:
                x = fn(x)
            return x
        return chunk

    for start in range(0, len(functions), size):
        input = checkpoint(run(start, min(start + size, len(functions))), input)
    return input
