"""The MindSpore-native trainer (call ``msmm.runtime.start()`` before the first MindSpore op)."""
from .step import compiled_value_and_grad

__all__ = ["compiled_value_and_grad"]
