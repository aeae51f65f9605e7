"""The one exception hierarchy of oneshot-nas; imports nothing from the project.

CLIs turn every ``OneShotError`` into one ``error: <message>`` line on stderr and exit code 2;
any other exception is a bug and keeps its traceback.
"""

__all__ = ['OneShotError', 'ArchError', 'UnknownModelError', 'WeightsError', 'DataError',
           'ExportError', 'QuantizationError', 'ProfilingError', 'TrainingError',
           'SearchError', 'DependencyError', 'OutputError', 'error_reason']


class OneShotError(Exception):
    """Base class: a user-facing error whose message says what was wrong and what to do."""


class DependencyError(OneShotError, ImportError):
    """A required package (MXNet, onnxruntime, ...) is missing or unusable."""


class OutputError(OneShotError):
    """An output file cannot be written (missing or unwritable directory, full disk, ...)."""


class ArchError(OneShotError, ValueError):
    """An architecture (choice vectors, flags, input size) is invalid."""


class UnknownModelError(OneShotError, LookupError):
    """A model name is not in the zoo."""


class WeightsError(OneShotError):
    """Weights are missing, corrupt, or do not fit the architecture."""


class DataError(OneShotError):
    """A dataset is empty, unreadable or malformed."""


class ExportError(OneShotError):
    """A model cannot be exported as asked."""


class QuantizationError(OneShotError):
    """Quantization or calibration cannot proceed."""


class ProfilingError(OneShotError):
    """Profiling or latency measurement cannot proceed."""


class TrainingError(OneShotError):
    """Training cannot proceed (diverged, bad checkpoint, ...)."""


class SearchError(OneShotError):
    """A search cannot proceed (infeasible constraints, wrong supernet, ...)."""


def error_reason(err):
    """The informative line of an exception's text. MXNet's errors start with a Python and a
    C++ stack trace; the line that says what failed ('Check failed: ...') comes last."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()
             and not line.strip().startswith(('Traceback', 'File ', '[bt]', 'Stack trace'))]
    checks = [line for line in lines if 'Check failed' in line or 'Error' in line[:20]]
    return (checks or lines or [type(err).__name__])[-1][:200]
