"""Reading weight files safely (``nas.atomic.save_params`` writes them).

Files are read with ``mx.nd.load`` (a plain tensor format: nothing in them is executed) and every
tensor is checked against the network before anything is loaded.
"""
import mxnet as mx

from .errors import WeightsError, error_reason

__all__ = ['load_params_checked']


def _load_ndarrays(path):
    try:
        loaded = mx.nd.load(path)
    except (mx.base.MXNetError, OSError, ValueError) as err:
        raise WeightsError('cannot read weights file %s: it is truncated or not an MXNet '
                           '.params file (%s)' % (path, error_reason(err))) from None
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError('weights file %s holds no named parameters' % path)
    return {k.split(':', 1)[-1]: v for k, v in loaded.items()}  # drop arg:/aux: prefixes


def _match_params(net, loaded, path):
    """Map file tensors to the net's parameters: by name (our files) or, for reference-layout
    files, in ``collect_params()`` order with a shape check on every tensor (SPEC P1)."""
    expected = net._collect_params_with_prefix()
    if set(loaded) == set(expected):
        pairs = [(name, loaded[name], name) for name in expected]
    elif len(loaded) == len(expected):
        pairs = [(name, value, file_name) for (name, _), (file_name, value)
                 in zip(expected.items(), loaded.items())]
    else:
        missing = sorted(set(expected) - set(loaded))
        raise WeightsError('%s does not fit this architecture: it has %d tensors, the network '
                           'needs %d (first missing: %s)'
                           % (path, len(loaded), len(expected), missing[0] if missing else '-'))
    for name, value, file_name in pairs:
        shape = expected[name].shape
        if tuple(value.shape) != tuple(shape):
            raise WeightsError('parameter %s has shape %s in %s (stored as %s) but the architecture '
                               'needs %s; the weights belong to another architecture'
                               % (name, tuple(value.shape), path, file_name, tuple(shape)))
    return {name: value for name, value, _ in pairs}


def load_params_checked(net, path, ctx=None):
    """Load ``path`` into ``net`` after checking every parameter's name and shape."""
    params = _match_params(net, _load_ndarrays(path), path)
    ctx = ctx or mx.cpu()
    expected = net._collect_params_with_prefix()
    for name, value in params.items():
        param = expected[name]
        if param._data is None:
            param.initialize(ctx=ctx)
        param.set_data(value.as_in_context(ctx))
    return net


