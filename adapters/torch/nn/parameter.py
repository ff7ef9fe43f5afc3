"""``torch.nn.parameter``: where torch defines ``Parameter``."""
from .module import Parameter

__all__ = ["Parameter"]
