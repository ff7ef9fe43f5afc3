"""Parameter storage for the layers: allocated here, filled by ``nn.init`` in ``reset_parameters``."""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore
from mindspore import ops

from .module import Parameter


def new_parameter(shape: Sequence[int], dtype: Optional[mindspore.dtype.Type] = None,
                  requires_grad: bool = True) -> mindspore.Parameter:
    """A zero-filled Parameter of ``shape`` (``dtype`` defaults to float32, torch's default)."""
    return Parameter(ops.zeros(tuple(shape), dtype or mindspore.float32), requires_grad=requires_grad)
