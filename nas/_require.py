"""Fail early, with the install command, when MXNet is missing."""
from .errors import DependencyError

try:
    import mxnet  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised in a venv without mxnet
    raise DependencyError(
        "MXNet is not installed (%s). Install oneshot-nas with an MXNet extra: "
        "pip install -e .[cpu] (CPU wheel) or pip install -e .[gpu] (mxnet-cu112, needs a CUDA "
        "driver)." % err) from err
