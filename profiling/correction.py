"""The residual the sum of isolated blocks misses, fitted on whole calibration subnets.

A network is one runtime call while the table sums 22 (the per-call cost is taken off each
entry, but reorders between blocks, cache effects and fusions across block boundaries are not).
With K <= 10 calibration subnets measured whole, three models of ``measured`` (probe units)
from ``predicted`` (the table's sum) are compared by leave-one-out relative error: none, a
scale (``measured = a * predicted``) and a line (``a * predicted + b``); the best one is used,
a line only when its slope is within a factor ``LINE_SLACK`` of the scale's: calibration
subnets are of similar size, so on a busy machine a line can fit their noise with a slope near
zero or below (a constant prediction, or one where the cheapest subnet is not predicted cheapest).
"""
import numpy as np

from nas.errors import ProfilingError

__all__ = ['MODELS', 'fit_correction', 'apply_correction']

MODELS = ('none', 'scale', 'line')
LINE_SLACK = 2.0


def _fit(model, predicted, measured):
    if model == 'none':
        return 1.0, 0.0
    if model == 'scale':  # the median ratio: a subnet caught by a burst of load moves it less
        return float(np.median(measured / predicted)), 0.0
    slope, intercept = np.polyfit(predicted, measured, 1)
    return float(slope), float(intercept)


def fit_correction(predicted, measured):
    """Choose and fit the correction for calibration subnets with table sums ``predicted``
    and whole-network medians ``measured`` (same units); returns the dict stored in the table:
    ``model``, ``slope``, ``intercept``, ``residuals`` (relative, of the chosen fit on the
    calibration subnets) and ``loo_error`` (mean |relative error| left-one-out, per model)."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    if predicted.shape != measured.shape or predicted.size < 3:
        raise ProfilingError('the correction needs at least 3 calibration subnets, got %d'
                             % predicted.size)
    if not (np.all(np.isfinite(predicted)) and np.all(predicted > 0)
            and np.all(np.isfinite(measured)) and np.all(measured > 0)):
        raise ProfilingError('calibration latencies must be positive finite numbers')
    loo = {}
    for model in MODELS:
        errors = []
        for left in range(predicted.size):
            keep = np.arange(predicted.size) != left
            slope, intercept = _fit(model, predicted[keep], measured[keep])
            errors.append(abs(slope * predicted[left] + intercept - measured[left])
                          / measured[left])
        loo[model] = float(np.mean(errors))
    fits = {model: _fit(model, predicted, measured) for model in MODELS}
    ratio = fits['line'][0] / fits['scale'][0]
    allowed = MODELS if 1 / LINE_SLACK <= ratio <= LINE_SLACK else MODELS[:2]
    model = min(allowed, key=lambda m: (loo[m], MODELS.index(m)))  # ties: the simpler one
    slope, intercept = fits[model]
    residuals = (slope * predicted + intercept - measured) / measured
    return {'model': model, 'slope': slope, 'intercept': intercept,
            'residuals': [float(r) for r in residuals], 'loo_error': loo,
            'calibration': {'predicted': predicted.tolist(), 'measured': measured.tolist()}}


def apply_correction(correction, units):
    """The corrected sum (probe units); no correction stored: unchanged."""
    if not correction:
        return units
    return correction['slope'] * units + correction['intercept']
