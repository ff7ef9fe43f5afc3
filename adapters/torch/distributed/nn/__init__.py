"""``torch.distributed.nn``: collectives that return their result (and are differentiable)."""
from . import functional

__all__ = ["functional"]
