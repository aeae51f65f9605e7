"""Trace a Gluon HybridBlock to an MXNet symbol; write it as ``-symbol.json`` + ``.params``.

The tracing and the all-or-nothing file writing here are shared by the other exporters.
"""
import contextlib
import logging
import os
import tempfile

import mxnet as mx

from nas.errors import ExportError

__all__ = ['INPUT_NAME', 'trace', 'symbol_block', 'staged_files', 'export_mxnet']

_log = logging.getLogger(__name__)

INPUT_NAME = 'data'


def trace(net, input_shape, ctx=mx.cpu()):
    """Return ``(symbol, params)`` of ``net`` with one input named ``data`` of ``input_shape``.

    ``params`` maps every parameter the symbol reads (arguments and auxiliary states) to its
    NDArray.
    """
    data = mx.nd.zeros(tuple(input_shape), ctx=ctx)
    try:
        net(data)  # finishes deferred initialisation so that every parameter has a shape
    except Exception as err:
        raise ExportError('the network cannot run on an input of shape %s: %s'
                          % (tuple(input_shape), err)) from err
    with mx.name.NameManager():  # fresh counters: the same net always traces to the same names
        sym = net(mx.sym.var(INPUT_NAME))
    if not isinstance(sym, mx.sym.Symbol):
        raise ExportError('%s did not return a symbol when called on one; only HybridBlocks can be '
                          'exported' % type(net).__name__)
    wanted = set(sym.list_inputs())
    params = {p.name: p.data(ctx) for p in net.collect_params().values() if p.name in wanted}
    missing = wanted - set(params) - {INPUT_NAME}
    if missing:
        raise ExportError('the traced graph reads inputs that are not parameters of the network: '
                          '%s; a network must take exactly one input'
                          % ', '.join(sorted(missing)))
    return sym, params


def symbol_block(sym, params, ctx=mx.cpu()):
    """Wrap a symbol whose only free input is ``data`` and its parameter values in a SymbolBlock."""
    block = mx.gluon.SymbolBlock(sym, mx.sym.var(INPUT_NAME, dtype='float32'))
    block.collect_params().load_dict({name: mx.nd.array(value, dtype=value.dtype)
                                      for name, value in params.items()}, ctx=ctx)
    return block


@contextlib.contextmanager
def staged_files(*paths):
    """Yield temporary paths beside ``paths``; move them into place only if the body succeeds.

    On any failure the temporaries are removed and no target is left half-written. OS errors
    (missing or unwritable directory) become ExportError.
    """
    temps = []
    try:
        for path in paths:
            folder, name = os.path.split(os.path.abspath(path))
            handle, temp = tempfile.mkstemp(prefix='.%s.' % name, suffix='.tmp', dir=folder)
            os.close(handle)
            temps.append(temp)
            os.chmod(temp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
    except OSError as err:
        _remove(temps)
        raise ExportError('cannot write %s: %s; check that the directory exists and is writable'
                          % (path, err)) from err
    placed = []
    try:
        yield temps
        try:
            for temp, path in zip(temps, paths):
                os.replace(temp, path)
                placed.append(path)
        except OSError as err:
            raise ExportError('cannot write %s: %s' % (', '.join(paths), err)) from err
    finally:
        if len(placed) < len(paths):  # a pair of files is useless without its partner
            _remove(temps + placed)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(paths):
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def export_mxnet(net, prefix, input_shape, ctx=mx.cpu()):
    """Write ``prefix-symbol.json`` and ``prefix-0000.params``, loadable by ``SymbolBlock.imports``.

    Returns the two paths.
    """
    sym, params = trace(net, input_shape, ctx)
    aux = set(sym.list_auxiliary_states())
    tagged = {('aux:' if name in aux else 'arg:') + name: value for name, value in params.items()}
    paths = ('%s-symbol.json' % prefix, '%s-0000.params' % prefix)
    with staged_files(*paths) as (sym_temp, params_temp):
        sym.save(sym_temp)
        mx.nd.save(params_temp, tagged)
    _log.info('wrote %s and %s (%d tensors)', paths[0], paths[1], len(tagged))
    return paths
