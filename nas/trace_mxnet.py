"""Tracer of Gluon HybridBlocks: their MXNet symbol, walked node by node, as ``GraphOp`` records."""
import ast
import json
import math

import mxnet as mx

from .errors import ArchError, ProfilingError
from .graph_ops import GraphOp, computed_weight_error, image_shape, shuffle_channels, weighted_op

__all__ = ['trace_net']

_MX_KINDS = {
    'Convolution': 'conv', 'FullyConnected': 'fc', 'BatchNorm': 'bn', 'Pooling': 'pool',
    '_contrib_AdaptiveAvgPooling2D': 'pool', 'relu': 'relu', 'clip': 'clip',
    'hard_sigmoid': 'hard_sigmoid',
    'elemwise_mul': 'mul', 'broadcast_mul': 'mul', '_mul': 'mul', '_mul_scalar': 'mul',
    '_div_scalar': 'mul', '_rdiv_scalar': 'mul', 'elemwise_div': 'mul', 'broadcast_div': 'mul',
    '_div': 'mul',
    'elemwise_add': 'add', 'broadcast_add': 'add', '_plus': 'add', '_add': 'add',
    '_plus_scalar': 'add', '_minus_scalar': 'add', '_rminus_scalar': 'add',
    'elemwise_sub': 'add', 'broadcast_sub': 'add', '_minus': 'add', '_sub': 'add',
    'transpose': 'transpose', 'SwapAxis': 'transpose', 'swapaxes': 'transpose',
}
_MX_FREE = frozenset([
    'Reshape', 'reshape', 'reshape_like', 'slice_axis', 'slice', 'slice_like', 'Concat',
    'concat', 'Dropout', 'Flatten', 'flatten', 'SliceChannel', 'split', '_copy', 'identity',
    'BlockGrad', 'stop_gradient', 'expand_dims', 'squeeze', 'Cast', 'cast',
])


def _mx_attr(attrs, key, default):
    value = attrs.get(key)
    return default if value is None else ast.literal_eval(value)


def _mx_kind(node):
    op, attrs = node['op'], node.get('attrs', {})
    if op == 'Activation':
        return 'relu' if attrs.get('act_type') == 'relu' else 'unknown'
    if op in _MX_FREE:
        return 'free'
    return _MX_KINDS.get(op, 'unknown')


def trace_net(net, input_shape):
    """Trace a Gluon HybridBlock through its symbol; ``input_shape`` (C, H, W) or (N, C, H, W)."""
    if not isinstance(net, mx.gluon.HybridBlock):
        raise ProfilingError('cannot count a %s: only Gluon HybridBlocks have a graph to walk'
                             % type(net).__name__)
    out = net(mx.sym.var('data'))
    if isinstance(out, (list, tuple)):
        out = mx.sym.Group(list(out))
    return _trace_symbol(out, {'data': image_shape(input_shape)})


def _trace_symbol(sym, input_shapes):
    internals = sym.get_internals()
    try:
        _, out_shapes, _ = internals.infer_shape(**input_shapes)
    except mx.base.MXNetError as err:
        raise ArchError('input shape %s does not fit the network: %s' % (
            input_shapes, str(err).strip().splitlines()[0])) from err
    if out_shapes is None:
        raise ProfilingError('cannot infer the graph shapes from %s; the network takes the '
                             'inputs %s' % (input_shapes, sym.list_inputs()))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    nodes = json.loads(sym.tojson())['nodes']

    def shape(src):  # src = [node index, output index, version]
        node = nodes[src[0]]
        if node['op'] == 'null':
            return shapes[node['name']]
        single = node['name'] + '_output'
        return shapes[single] if single in shapes else shapes['%s%d' % (single, src[1])]

    ops = []
    for index, node in enumerate(nodes):
        if node['op'] == 'null':
            continue
        params, acts = [], []
        for src in node['inputs']:
            source = nodes[src[0]]
            is_param = source['op'] == 'null' and source['name'] not in input_shapes
            (params if is_param else acts).append(src)
        producers = tuple('' if nodes[s[0]]['op'] == 'null' else nodes[s[0]]['name']
                          for s in acts)
        ops.append(_mx_op(node, shape([index, 0, 0]), [shape(s) for s in params],
                          [shape(s) for s in acts], producers))
    return ops


def _mx_op(node, out_shape, params, acts, producers):
    """GraphOp of one MXNet node from its parameter and activation input shapes."""
    name, op_type, attrs = node['name'], node['op'], node.get('attrs', {})
    kind = _mx_kind(node)
    if kind in ('conv', 'fc', 'bn'):  # params: weight [, bias] or gamma, beta, running stats
        if not params:
            raise computed_weight_error(op_type, name)
        return weighted_op(name, op_type, kind, out_shape, producers, params[0],
                            params[1] if len(params) > 1 else None)
    extra = {}
    if kind == 'pool':
        if op_type == 'Pooling' and attrs.get('global_pool') != 'True':
            window = math.prod(_mx_attr(attrs, 'kernel', (1, 1)))
        else:  # global or adaptive pooling: whole input windows
            window = math.prod(acts[0][2:]) // math.prod(out_shape[2:])
        pool_type = attrs.get('pool_type', 'max') if op_type == 'Pooling' else 'avg'
        extra = dict(window=window, pool_type=pool_type)
    elif kind == 'transpose':
        perm = list(range(len(acts[0])))
        if op_type == 'transpose':
            perm = list(_mx_attr(attrs, 'axes', ()) or reversed(perm))
        else:
            a, b = int(attrs.get('dim1', 0)), int(attrs.get('dim2', 0))
            perm[a], perm[b] = perm[b], perm[a]
        channels = shuffle_channels(perm, acts[0])
        kind, extra = ('shuffle', dict(shuffle_channels=channels)) if channels else ('free', {})
    elif kind == 'unknown':
        extra = dict(weight_params=sum(math.prod(p) for p in params))
    return GraphOp(name, op_type, kind, tuple(out_shape), producers, **extra)

