"""oneshot-nas core: search space, blocks, the one network class, counting, training, search."""
from . import _require  # noqa: F401  (clear error when MXNet is missing)
from .errors import *  # noqa: F401,F403
