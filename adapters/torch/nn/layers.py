"""torch.nn layers as MindSpore Cells (each family in its own module)."""
from .activation import *  # noqa: F401,F403
from .activation import __all__ as _activation
from .conv import *  # noqa: F401,F403
from .conv import __all__ as _conv
from .dropout import *  # noqa: F401,F403
from .dropout import __all__ as _dropout
from .linear import *  # noqa: F401,F403
from .linear import __all__ as _linear
from .loss import *  # noqa: F401,F403
from .loss import __all__ as _loss
from .normalization import *  # noqa: F401,F403
from .normalization import __all__ as _normalization
from .sparse import *  # noqa: F401,F403
from .sparse import __all__ as _sparse

__all__ = _activation + _conv + _dropout + _linear + _loss + _normalization + _sparse
