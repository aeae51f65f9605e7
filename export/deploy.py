"""The MXNet deployment graph: what ``nas-export --mxnet`` writes (issue #14).

MXNet runs the graph as trained one operator at a time, the channel shuffle's reshape / swapaxes /
reshape / slices included. The ONNX exporter already knows how to make that graph lean, so the
deployment graph reuses it rather than a second implementation: BN is merged
(``export.merge_bn``), the net is converted to ONNX and run through the same passes as
``nas-export --onnx`` (constants folded, gluoncv's hard-sigmoid as one node, the channel shuffle
absorbed into the convolution weights as contiguous slices, channel counts padded to multiples of
16). The result is translated back to MXNet operators, in the forms oneDNN fuses (``Activation``
and ``clip`` after a convolution, an add into its sum), and partitioned for the MKLDNN backend
(``optimize_for``) before it is written, so the files load with plain
``mx.gluon.SymbolBlock.imports`` and run the fused graph with no extra step. Fused nodes keep the
name of the convolution they hold, so the per-op profile still maps them to blocks.

What oneDNN needs, measured on OneShot-S+ at 224 px (``DNNL_VERBOSE``): a convolution whose
channels are not a multiple of 16 runs a plain-layout GEMM kernel (a 57-channel depthwise conv
0.57 ms against 0.02 ms for its blocked kernel), hence the padding (0.82x the time at batch 1,
0.76x at batch 32). oneDNN writes a convolution's output in its blocked layout, and MXNet converts
it back to NCHW for every operator without a oneDNN kernel that reads it: a hard-swish reads its
input twice, a shuffle's slices up to four times. One reshape per output with two or more such
readers converts it once for all of them (0.86x the time at batch 1, 0.94x at batch 32).
"""
import collections
import dataclasses
import json
import logging

import mxnet as mx
import numpy as np

from nas.atomic import atomic_paths
from nas.errors import ExportError, error_reason
from .merge_bn import merge_bn_symbol
from .mxnet_symbol import INPUT_NAME, symbol_block, trace
from .onnx import graph_passes, onnx_model
from .onnx_graph import GraphView

__all__ = ['CHANNEL_BLOCK', 'DeployReport', 'deployment_graph', 'export_deploy', 'fuse_onednn',
           'share_plain_layout', 'save_graph', 'to_mxnet']

log = logging.getLogger(__name__)

_BACKEND = 'MKLDNN'  # MXNet 1.9.1's name for the oneDNN subgraph backend
_FUSED_CONV = '_sg_mkldnn_conv'
_PLAIN_ONLY = ('hard_sigmoid', 'elemwise_mul', 'broadcast_mul', 'slice_axis')  # no oneDNN kernel
CHANNEL_BLOCK = 16  # oneDNN's blocked kernels on AVX-512 (module doc)
_PASSTHROUGH = ('Identity', 'Dropout')
_ACTIVATIONS = {'Relu': 'relu', 'Sigmoid': 'sigmoid', 'Tanh': 'tanh', 'Softplus': 'softrelu'}
_ELEMENTWISE = {'Add': ('elemwise_add', 'broadcast_add', '_plus_scalar'),
                'Sub': ('elemwise_sub', 'broadcast_sub', '_minus_scalar'),
                'Mul': ('elemwise_mul', 'broadcast_mul', '_mul_scalar'),
                'Div': ('elemwise_div', 'broadcast_div', '_div_scalar')}


@dataclasses.dataclass
class DeployReport:
    """Operator counts of the graph as traced and as written, and how many convs oneDNN fused."""
    ops_before: dict
    ops_after: dict
    fused_convs: int


def deployment_graph(net, input_shape, ctx=mx.cpu(), fuse=True, channel_block=CHANNEL_BLOCK):
    """``(symbol, params, DeployReport)`` of ``net``'s deployment graph (module doc); ``params``
    maps names to numpy arrays. ``fuse=False`` stops before oneDNN's partitioning;
    ``channel_block=0`` leaves the channel counts as they are."""
    sym, params = trace(net, input_shape, ctx)
    merged, merged_params, _ = merge_bn_symbol(sym, params)
    model = onnx_model(symbol_block(merged, merged_params, ctx), input_shape,
                       graph_passes(13, shuffle='slices', channel_block=channel_block), ctx)
    new_sym, new_params = to_mxnet(model)
    if fuse:
        new_sym = share_plain_layout(fuse_onednn(new_sym, new_params, input_shape))
    after = _op_counts(new_sym)
    report = DeployReport(_op_counts(sym), after, after.get(_FUSED_CONV, 0))
    return new_sym, new_params, report


def export_deploy(net, prefix, input_shape, ctx=mx.cpu(), channel_block=CHANNEL_BLOCK):
    """Write the deployment graph as ``prefix-symbol.json`` + ``prefix-0000.params``; returns the
    two paths and the DeployReport."""
    sym, params, report = deployment_graph(net, input_shape, ctx, channel_block=channel_block)
    paths = save_graph(sym, params, prefix)
    log.info('wrote %s and %s: %d ops as traced, %d written, %d fused convs', paths[0], paths[1],
              sum(report.ops_before.values()), sum(report.ops_after.values()),
              report.fused_convs)
    return paths, report


def save_graph(sym, params, prefix):
    """Write ``sym`` (inputs: ``data`` and arguments) and its numpy ``params`` as
    ``prefix-symbol.json`` + ``prefix-0000.params``, both or neither; returns the two paths."""
    tagged = {'arg:' + name: mx.nd.array(value, dtype=value.dtype)
              for name, value in params.items()}
    paths = ('%s-symbol.json' % prefix, '%s-0000.params' % prefix)
    with atomic_paths(*paths, error=ExportError) as (sym_temp, params_temp):
        sym.save(sym_temp)
        mx.nd.save(params_temp, tagged)
    return paths


def _op_counts(sym):
    nodes = json.loads(sym.tojson())['nodes']
    return dict(collections.Counter(node['op'] for node in nodes if node['op'] != 'null'))


def fuse_onednn(sym, params, input_shape):
    """``sym`` partitioned for oneDNN (conv + bias + activation + sum as one node); each fused
    node takes its convolution's name."""
    args = {name: mx.nd.array(value) for name, value in params.items()}
    args[INPUT_NAME] = mx.nd.zeros(input_shape)
    try:
        fused = sym.optimize_for(_BACKEND, args, {}, ctx=mx.cpu())
    except mx.base.MXNetError as err:
        raise ExportError('oneDNN cannot partition the deployment graph: %s; export with '
                          '--no-optimize' % error_reason(err)) from err
    graph = json.loads(fused.tojson())
    for node in graph['nodes']:
        if node['op'] == _FUSED_CONV:
            inner = node['subgraphs'][0]['nodes']
            node['name'] = next(n['name'] for n in inner if n['op'] == 'Convolution')
    return mx.sym.load_json(json.dumps(graph))


def share_plain_layout(sym):
    """``sym`` with one ``reshape`` to its own shape after every fused convolution read by two or
    more operators that have no oneDNN kernel (module doc); those read the reshape's NCHW copy,
    oneDNN operators still read the blocked output. A single such reader converts the output
    itself as cheaply (measured: 0.995x with a reshape for it too)."""
    graph = json.loads(sym.tojson())
    nodes = graph['nodes']
    plain_readers = collections.Counter(
        entry[0] for node in nodes if node['op'] in _PLAIN_ONLY for entry in node['inputs'])
    order, plain_copy = [], {}  # old index -> new index; conv's new index -> its copy's
    written = []
    for node in nodes:
        inputs = [[order[i], slot, version] for i, slot, version in node['inputs']]
        if node['op'] in _PLAIN_ONLY:
            inputs = [[plain_copy.get(i, i), slot, version] for i, slot, version in inputs]
        written.append(dict(node, inputs=inputs))
        order.append(len(written) - 1)
        if node['op'] == _FUSED_CONV and plain_readers[len(order) - 1] > 1:
            written.append({'op': 'Reshape', 'name': node['name'] + '_nchw',
                            'attrs': {'shape': '(0, 0, 0, 0)'}, 'inputs': [[order[-1], 0, 0]]})
            plain_copy[order[-1]] = len(written) - 1
    graph['nodes'] = written
    graph['arg_nodes'] = [i for i, node in enumerate(written) if node['op'] == 'null']
    graph['heads'] = [[order[i], slot, version] for i, slot, version in graph['heads']]
    graph.pop('node_row_ptr', None)
    return mx.sym.load_json(json.dumps(graph))


# ------------------------------------------------------------------------ ONNX -> MXNet


def to_mxnet(model):
    """``(symbol, params)`` computing what the ONNX ``model`` computes, one MXNet operator per
    ONNX node (two for HardSwish); its input is ``data``, constants become parameters."""
    view = GraphView(model)
    inputs = [v.name for v in view.graph.input if v.name not in view.values]
    if len(inputs) != 1:
        raise ExportError('the deployment graph must have one input, it has %d' % len(inputs))
    env, params = {inputs[0]: mx.sym.var(INPUT_NAME)}, {}

    def tensor(name):
        if name not in env:
            params[name] = view.values[name]
            env[name] = mx.sym.var(name, shape=params[name].shape)
        return env[name]

    for node in view.graph.node:
        env[node.output[0]] = _translate(view, node, tensor)
    heads = [env[v.name] for v in view.graph.output]
    sym = heads[0] if len(heads) == 1 else mx.sym.Group(heads)
    used = set(sym.list_inputs())
    return sym, {name: value for name, value in params.items() if name in used}


def _translate(view, node, tensor):
    """The MXNet symbol of one ONNX node."""
    op, name, data = node.op_type, node.output[0], node.input[0]
    attr = lambda key, default=None: view.attr(node, key, default)  # noqa: E731
    if op in _PASSTHROUGH:
        return tensor(data)
    if op == 'Conv':
        weight = view.values[node.input[1]]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        extra = {'bias': tensor(bias)} if bias else {'no_bias': True}
        return mx.sym.Convolution(tensor(data), tensor(node.input[1]), name=name,
                                  kernel=weight.shape[2:], num_filter=weight.shape[0],
                                  num_group=attr('group', 1), stride=attr('strides', None) or
                                  (1,) * (weight.ndim - 2), dilate=attr('dilations', None) or
                                  (1,) * (weight.ndim - 2), pad=_pads(node, attr('pads', None),
                                                                      weight.ndim - 2), **extra)
    if op in _ACTIVATIONS:
        return mx.sym.Activation(tensor(data), act_type=_ACTIVATIONS[op], name=name)
    if op == 'HardSigmoid':
        return mx.sym.hard_sigmoid(tensor(data), alpha=attr('alpha', 0.2), beta=attr('beta', 0.5),
                                   name=name)
    if op == 'HardSwish':
        gate = mx.sym.hard_sigmoid(tensor(data), alpha=1 / 6, beta=0.5, name=name + '_gate')
        return mx.sym.elemwise_mul(tensor(data), gate, name=name)
    if op == 'Clip':
        low, high = (float(view.values[node.input[k]]) if len(node.input) > k and node.input[k]
                     else bound for k, bound in ((1, -np.inf), (2, np.inf)))
        return mx.sym.clip(tensor(data), a_min=low, a_max=high, name=name)
    if op in _ELEMENTWISE:
        return _elementwise(view, node, tensor)
    if op == 'Concat':
        return mx.sym.concat(*[tensor(i) for i in node.input], dim=attr('axis'), name=name)
    if op == 'Slice':
        return _slice(view, node, tensor)
    if op in ('GlobalAveragePool', 'GlobalMaxPool'):
        return mx.sym.Pooling(tensor(data), global_pool=True, kernel=(1, 1), name=name,
                              pool_type='avg' if op == 'GlobalAveragePool' else 'max')
    if op in ('AveragePool', 'MaxPool'):
        kernel = attr('kernel_shape')
        extra = {'count_include_pad': bool(attr('count_include_pad', 0))} \
            if op == 'AveragePool' else {}
        return mx.sym.Pooling(tensor(data), kernel=kernel, stride=attr('strides', None) or
                              (1,) * len(kernel), pad=_pads(node, attr('pads', None), len(kernel)),
                              pool_type='avg' if op == 'AveragePool' else 'max',
                              pooling_convention='full' if attr('ceil_mode', 0) else 'valid',
                              name=name, **extra)
    if op == 'Transpose':
        return mx.sym.transpose(tensor(data), axes=attr('perm'), name=name)
    if op == 'Flatten' and attr('axis', 1) == 1:
        return mx.sym.Flatten(tensor(data), name=name)
    if op == 'Reshape' and node.input[1] in view.values and not attr('allowzero', 0):
        return mx.sym.reshape(tensor(data), shape=tuple(int(d) for d in view.values[node.input[1]]),
                              name=name)
    if op == 'Gemm' and _plain_gemm(view, node):
        weight = view.values[node.input[1]]
        if not attr('transB', 0):
            view.values[node.input[1]] = weight = np.ascontiguousarray(weight.T)
        bias = {'bias': tensor(node.input[2])} if len(node.input) > 2 else {'no_bias': True}
        return mx.sym.FullyConnected(tensor(data), tensor(node.input[1]), name=name,
                                     num_hidden=weight.shape[0], **bias)
    if op == 'BatchNormalization' and len(node.output) == 1:
        return mx.sym.BatchNorm(*[tensor(i) for i in node.input], eps=attr('epsilon', 1e-5),
                                fix_gamma=False, use_global_stats=True, name=name)
    raise ExportError('the deployment graph has a %s node (%s) that has no MXNet translation '
                      'here; export with --no-optimize' % (op, name))


def _pads(node, pads, dims):
    """ONNX begin/end pads as MXNet's symmetric ``pad``; asymmetric ones cannot be expressed."""
    pads = list(pads or [0] * 2 * dims)
    if pads[:dims] != pads[dims:]:
        raise ExportError('%s %s pads asymmetrically (%s), which MXNet cannot express; export '
                          'with --no-optimize' % (node.op_type, node.output[0], pads))
    return tuple(pads[:dims])


def _plain_gemm(view, node):
    return (node.input[1] in view.values and view.attr(node, 'alpha', 1.0) == 1.0
            and view.attr(node, 'beta', 1.0) == 1.0 and not view.attr(node, 'transA', 0)
            and (len(node.input) < 3 or node.input[2] in view.values))


def _elementwise(view, node, tensor):
    same, broadcast, scalar = _ELEMENTWISE[node.op_type]
    a, b = node.input
    constant = view.values.get(b)
    if constant is not None and constant.size == 1:
        return getattr(mx.sym, scalar)(tensor(a), scalar=float(constant.reshape(-1)[0]),
                                       name=node.output[0])
    shapes = [view.shapes.get(i) for i in (a, b)]
    kind = same if shapes[0] == shapes[1] and None not in shapes[0] else broadcast
    if node.op_type == 'Mul' and not _is_hard_swish(view, a, b):
        kind = broadcast  # SE's scale, even at 1x1: one op for it, as traced (stays FP32 in INT8)
    return getattr(mx.sym, kind)(tensor(a), tensor(b), name=node.output[0])


def _is_hard_swish(view, a, b):
    """``a * b`` is ``x * HardSigmoid(x)``."""
    return any(view.producer.get(gate) is not None and view.producer[gate].op_type ==
               'HardSigmoid' and view.producer[gate].input[0] == data
               for data, gate in ((a, b), (b, a)))


def _slice(view, node, tensor):
    parts = [view.values.get(i) for i in node.input[1:]]
    if len(parts) < 3 or any(p is None for p in parts) or \
            any(np.asarray(p).size != 1 for p in parts):
        raise ExportError('Slice %s is not a constant slice of one axis; export with '
                          '--no-optimize' % node.output[0])
    start, end, axis = (int(np.asarray(p).reshape(-1)[0]) for p in parts[:3])
    if len(parts) > 3 and int(np.asarray(parts[3]).reshape(-1)[0]) != 1:
        raise ExportError('Slice %s has a step; export with --no-optimize' % node.output[0])
    size = view.shapes[node.input[0]][axis]
    return mx.sym.slice_axis(tensor(node.input[0]), axis=axis, begin=start,
                             end=None if end >= size else end, name=node.output[0])
