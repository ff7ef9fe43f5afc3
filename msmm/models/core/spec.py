"""Megatron-style layer specs: which class serves each slot of a layer, chosen at build time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class ModuleSpec:
    """A class to build, extra keyword arguments, and the specs of its own submodules."""

    module: type
    params: Dict[str, Any] = field(default_factory=dict)
    submodules: Optional[Any] = None


def build_module(spec: ModuleSpec, *args: Any, **kwargs: Any) -> Any:
    """Instantiate ``spec.module(*args, **spec.params, **kwargs)`` (plus ``submodules=`` if set)."""
    if spec.submodules is not None:
        kwargs["submodules"] = spec.submodules
    return spec.module(*args, **spec.params, **kwargs)
