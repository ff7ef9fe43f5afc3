"""adapters.torch.nn: torch.nn whose modules are MindSpore Cells."""
from . import functional, init, parameter
from .layers import *  # noqa: F401,F403
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = ["Module", "ModuleDict", "ModuleList", "Parameter", "Sequential", "functional", "init"]
__all__ += layers.__all__  # noqa: F405
