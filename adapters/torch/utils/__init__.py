"""torch.utils."""
from . import checkpoint
