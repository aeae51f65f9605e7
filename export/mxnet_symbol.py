"""Trace a Gluon HybridBlock to an MXNet symbol; write it as ``-symbol.json`` + ``.params``.

The tracing here is shared by the other exporters.
"""
import logging

import mxnet as mx
import numpy as np

from nas.atomic import atomic_paths
from nas.errors import ExportError

__all__ = ['INPUT_NAME', 'trace', 'symbol_block', 'export_mxnet']

log = logging.getLogger(__name__)

INPUT_NAME = 'data'


def trace(net, input_shape, ctx=mx.cpu()):
    """Return ``(symbol, params)`` of ``net`` with one input named ``data`` of ``input_shape``.

    ``params`` maps every parameter the symbol reads (arguments and auxiliary states) to its
    NDArray. The input has the dtype of the network's parameters (float32 unless it was cast).
    """
    dtype = next((p.dtype for p in net.collect_params().values()), 'float32')
    data = mx.nd.zeros(tuple(input_shape), ctx=ctx, dtype=dtype)
    try:
        net(data)  # finishes deferred initialisation so that every parameter has a shape
        # oneDNN convolutions reorder their weights in the background on the first inference;
        # reading a weight while that runs fails ("can't generate TBlob for MKLDNN data")
        mx.nd.waitall()
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
    """Wrap a symbol whose only free input is ``data`` and its parameter values in a SymbolBlock
    (the input takes the parameters' dtype)."""
    dtype = next((value.dtype for value in params.values()
                  if np.issubdtype(value.dtype, np.floating)), 'float32')
    block = mx.gluon.SymbolBlock(sym, mx.sym.var(INPUT_NAME, dtype=dtype))
    block.collect_params().load_dict({name: mx.nd.array(value, dtype=value.dtype)
                                      for name, value in params.items()}, ctx=ctx,
                                     cast_dtype=True, dtype_source='saved')
    return block


def export_mxnet(net, prefix, input_shape, ctx=mx.cpu()):
    """Write ``prefix-symbol.json`` and ``prefix-0000.params``, loadable by ``SymbolBlock.imports``.

    Returns the two paths.
    """
    sym, params = trace(net, input_shape, ctx)
    aux = set(sym.list_auxiliary_states())
    tagged = {('aux:' if name in aux else 'arg:') + name: value for name, value in params.items()}
    paths = ('%s-symbol.json' % prefix, '%s-0000.params' % prefix)
    with atomic_paths(*paths, error=ExportError) as (sym_temp, params_temp):
        sym.save(sym_temp)
        mx.nd.save(params_temp, tagged)
    log.info('wrote %s and %s (%d tensors)', paths[0], paths[1], len(tagged))
    return paths
