"""FLOPs and params of any network by walking its computation graph (SPEC §6.1).

A tracer turns a Gluon HybridBlock (through its MXNet symbol) or an ONNX model into ``GraphOp``
records with shapes; the counting rules read only those records, so both formats share them and
``profiling.scores`` applies the MicroNet rules (§6.4) to the same records. There are no per-model
formulas: any network built from the ops below is counted, and a new block needs no new code.
"""
import ast
import json
import logging
import math
import numbers
import os
from dataclasses import dataclass
from typing import Tuple

import mxnet as mx

from .errors import ArchError, ProfilingError, UnknownModelError

__all__ = ['GraphOp', 'LayerCount', 'CountReport', 'trace_net', 'trace_onnx', 'trace_model',
           'count_ops', 'count_net', 'count_onnx', 'count_model', 'REFERENCE_MODELS',
           'normalized_score']

_LOG = logging.getLogger(__name__)

# Comparison models of the Σ score, (FLOPs, params) (SPEC §5).
REFERENCE_MODELS = {
    'SinglePathOneShot': (328e6, 3.4e6),
    'MobileNetV3_large': (217e6, 5.4e6),
    'MobileNetV2_1.4': (585e6, 6.9e6),
    'ShuffleNetV2+_medium': (222e6, 5.6e6),
}


@dataclass(frozen=True)
class GraphOp:
    """One op of a traced graph for one image, in format-neutral terms.

    kind: conv, fc, bn, pool, relu, clip, hard_sigmoid, hard_swish, mul, add, shuffle, free or
    unknown. ``fan_in`` is the dot-product length of conv/fc; ``weight_params``/``bias_params`` are
    the conv/fc weight and bias sizes, BN gamma and beta, or an unknown op's parameter inputs;
    ``window`` is the number of inputs pooled per output; ``shuffle_channels`` the C of a channel
    shuffle. Bit widths are 32 for float32 graphs and come from tensor types in ONNX graphs.
    """
    name: str
    op_type: str
    kind: str
    out_shape: Tuple[int, ...]
    inputs: Tuple[str, ...] = ()  # ops producing the activation inputs ('' = graph input)
    fan_in: int = 0
    weight_params: int = 0
    bias_params: int = 0
    window: int = 0
    pool_type: str = ''
    shuffle_channels: int = 0
    weight_bits: int = 32
    bias_bits: int = 32
    act_bits: int = 32

    @property
    def out_elems(self):
        return math.prod(self.out_shape)


@dataclass(frozen=True)
class LayerCount:
    """One counted op: FLOPs (MACs + bias adds + pooling adds) and params, SPEC §6.1."""
    name: str
    op_type: str
    out_shape: Tuple[int, ...]
    flops: int
    params: int


@dataclass(frozen=True)
class CountReport:
    """Per-op rows (ops with FLOPs or params only) and the totals."""
    layers: Tuple[LayerCount, ...]
    flops: int
    params: int


# --------------------------------------------------------------------------------------------
# SPEC §6.1 rules


def _flops_params(op):
    if op.kind in ('conv', 'fc'):
        bias_adds = op.out_elems if op.bias_params else 0
        return op.out_elems * op.fan_in + bias_adds, op.weight_params + op.bias_params
    if op.kind == 'bn':  # gamma and beta, whatever fix_gamma says; running stats are not params
        return 0, op.weight_params + op.bias_params
    if op.kind == 'pool':  # global average pooling adds C·H·W; any pooling: inputs per output
        return op.out_elems * op.window, 0
    if op.kind == 'unknown' and op.weight_params:
        raise ProfilingError('op %s (%s) has %d parameters but no counting rule; supported '
                             'weighted ops are convolution, fully connected and batch norm'
                             % (op.name, op.op_type, op.weight_params))
    return 0, 0  # BN-free activations, elementwise ops, shuffle, split, concat, dropout, flatten


def count_ops(ops):
    """Apply the SPEC §6.1 convention to traced ops."""
    rows = []
    for op in ops:
        flops, params = _flops_params(op)
        if flops or params:
            rows.append(LayerCount(op.name, op.op_type, op.out_shape, flops, params))
    return CountReport(tuple(rows), sum(r.flops for r in rows), sum(r.params for r in rows))


def count_net(net, input_shape):
    """FLOPs/params (SPEC §6.1) of a Gluon HybridBlock for one image of ``input_shape``."""
    return count_ops(trace_net(net, input_shape))


def count_onnx(path_or_model, input_size=None):
    """FLOPs/params (SPEC §6.1) of an ONNX file or ModelProto; ``input_size`` sets dynamic H, W."""
    return count_ops(trace_onnx(path_or_model, input_size))


def count_model(model, input_shape=None):
    """``count_net`` for a HybridBlock, ``count_onnx`` for an ONNX path or ModelProto."""
    return count_ops(trace_model(model, input_shape))


def normalized_score(flops, params, ref='SinglePathOneShot'):
    """Σ = F/F_ref + P/P_ref (SPEC §6.3); the search's ``combined`` is Σ/2 (SPEC §5)."""
    if ref not in REFERENCE_MODELS:
        raise UnknownModelError('unknown reference model %r; known: %s'
                                % (ref, ', '.join(REFERENCE_MODELS)))
    ref_flops, ref_params = REFERENCE_MODELS[ref]
    return flops / ref_flops + params / ref_params


# --------------------------------------------------------------------------------------------
# shared helpers


def _image_shape(input_shape):
    """(C, H, W) or (N, C, H, W) -> (1, C, H, W): counts are per image (SPEC: batch 1)."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) not in (3, 4) or not all(
            isinstance(d, numbers.Integral) and d > 0 for d in shape):
        raise ArchError('input shape must be (C, H, W) or (N, C, H, W) positive ints, got %r'
                        % (input_shape,))
    return (1,) + shape[-3:]


def _shuffle_channels(perm, in_shape):
    """C of a channel shuffle: a transpose swapping axes 1 and 2 of an (N, g, C/g, ...) view."""
    if len(in_shape) >= 4 and list(perm) == [0, 2, 1] + list(range(3, len(in_shape))):
        return in_shape[1] * in_shape[2]
    return 0


def _weighted_op(name, op_type, kind, out_shape, inputs, weight, bias, **extra):
    """A conv/fc/bn op from its weight and bias shapes (None if absent)."""
    fan_in = math.prod(weight[1:]) if kind in ('conv', 'fc') else 0
    return GraphOp(name, op_type, kind, tuple(out_shape), tuple(inputs), fan_in=fan_in,
                   weight_params=math.prod(weight),
                   bias_params=math.prod(bias) if bias is not None else 0, **extra)


def _computed_weight(op_type, name):
    return ProfilingError('%s %s takes a computed weight; only stored weights can be counted'
                          % (op_type, name))


def trace_model(model, input_shape=None):
    """Trace a HybridBlock (``input_shape`` required) or an ONNX path / ModelProto."""
    if isinstance(model, mx.gluon.Block):
        if input_shape is None:
            raise ArchError('counting a network needs an input shape, e.g. (3, 224, 224)')
        return trace_net(model, input_shape)
    input_size = _image_shape(input_shape)[2:] if input_shape is not None else None
    return trace_onnx(model, input_size)


# --------------------------------------------------------------------------------------------
# MXNet symbol tracer

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
    return _trace_symbol(out, {'data': _image_shape(input_shape)})


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
            raise _computed_weight(op_type, name)
        return _weighted_op(name, op_type, kind, out_shape, producers, params[0],
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
        channels = _shuffle_channels(perm, acts[0])
        kind, extra = ('shuffle', dict(shuffle_channels=channels)) if channels else ('free', {})
    elif kind == 'unknown':
        extra = dict(weight_params=sum(math.prod(p) for p in params))
    return GraphOp(name, op_type, kind, tuple(out_shape), producers, **extra)


# --------------------------------------------------------------------------------------------
# ONNX tracer

_ONNX_KINDS = {
    'Conv': 'conv', 'QLinearConv': 'conv', 'Gemm': 'fc', 'MatMul': 'fc',
    'BatchNormalization': 'bn', 'GlobalAveragePool': 'pool', 'GlobalMaxPool': 'pool',
    'AveragePool': 'pool', 'MaxPool': 'pool', 'Relu': 'relu', 'Clip': 'clip',
    'HardSigmoid': 'hard_sigmoid', 'HardSwish': 'hard_swish', 'Mul': 'mul', 'Div': 'mul',
    'Add': 'add', 'Sub': 'add', 'Transpose': 'transpose',
    # onnxruntime's QOperator format (com.microsoft domain for all but QLinearConv/MatMul)
    'QLinearMatMul': 'fc', 'QGemm': 'fc', 'QLinearMul': 'mul', 'QLinearAdd': 'add',
    'QLinearGlobalAveragePool': 'pool', 'QLinearAveragePool': 'pool',
}
_ONNX_FREE = frozenset([
    'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Concat', 'Split', 'Slice', 'Dropout',
    'Shape', 'Gather', 'GatherND', 'ScatterND', 'Pad', 'Cast', 'Constant', 'ConstantOfShape',
    'Range', 'Expand', 'QLinearConcat',
])
# value-preserving plumbing: left out of the trace, producers are looked up through it
_ONNX_PASS_THROUGH = frozenset(['QuantizeLinear', 'DequantizeLinear', 'Identity'])
# (weight input, bias input) of the weighted ONNX ops
_ONNX_WEIGHTS = {'Conv': (1, 2), 'QLinearConv': (3, 8), 'Gemm': (1, 2), 'MatMul': (1, None),
                 'QLinearMatMul': (3, None), 'QGemm': (3, 6), 'BatchNormalization': (1, 2)}
_FLOAT_TYPES = frozenset([1, 10, 11, 16])  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_SHAPE_TYPES = frozenset([6, 7])  # INT32, INT64: shape arithmetic (activations are float/int8)


def _onnx():
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is a declared dependency
        from .errors import DependencyError
        raise DependencyError('counting ONNX models needs the onnx package: pip install onnx'
                              ) from err
    return onnx


def _load_onnx(path_or_model):
    onnx = _onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    path = os.fspath(path_or_model)
    if not os.path.isfile(path):
        raise ProfilingError('no ONNX file at %s' % path)
    try:
        model = onnx.load(path)
    except Exception as err:  # protobuf raises several types for a file that is not a model
        raise ProfilingError('%s is not an ONNX model (%s)' % (path, err)) from err
    if not model.graph.node:
        raise ProfilingError('%s is not an ONNX model: it holds no graph nodes' % path)
    return model


def _dims(value):
    """Static dims of a ValueInfo (None where symbolic), or None when the rank is unknown."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField('shape'):
        return None
    return [d.dim_value if d.HasField('dim_value') and d.dim_value > 0 else None
            for d in tensor_type.shape.dim]


def _fixed_inputs(model, input_size):
    """Copy of ``model`` whose inputs have batch 1 and ``input_size`` as spatial dims."""
    onnx = _onnx()
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    stored = {t.name for t in fixed.graph.initializer}
    for value in fixed.graph.input:
        if value.name in stored:  # old exporters list weights as inputs too
            continue
        dims = _dims(value)
        if dims is None:
            raise ArchError('ONNX input %r has no shape; re-export it with a shape'
                            % value.name)
        target = [1] + dims[1:]
        if input_size is not None and len(dims) == 2 + len(input_size):
            if any(d is not None and d != s for d, s in zip(dims[2:], input_size)):
                raise ArchError('ONNX input %r is fixed at %s; input_size %s does not match'
                                % (value.name, dims[1:], tuple(input_size)))
            target[2:] = input_size
        if None in target:
            raise ArchError('ONNX input %r has dynamic dims %s; pass input_size (e.g. 224) to '
                            'count it' % (value.name, ['?' if d is None else d for d in dims]))
        for dim, size in zip(value.type.tensor_type.shape.dim, target):
            dim.Clear()
            dim.dim_value = size
    return fixed


def _type_bits(elem_type):
    """Bit width of an ONNX tensor element type (32 when unknown)."""
    if not elem_type:
        return 32
    return _onnx().helper.tensor_dtype_to_np_dtype(elem_type).itemsize * 8


class _OnnxGraph:
    """Name lookups over one shape-inferred ONNX graph with fixed inputs."""

    def __init__(self, model):
        onnx = _onnx()
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as err:  # InferenceError, ValidationError, ...
            raise ProfilingError('ONNX shape inference failed: %s' % err) from err
        graph = inferred.graph
        self.info = {}  # tensor name -> (dims or None, elem_type)
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = _dims(value)
            if dims and dims[0] is None:  # symbolic batch left by Reshape(0, ...)
                dims[0] = 1
            self.info[value.name] = (dims, value.type.tensor_type.elem_type)
        self.stored_names = set()
        for tensor in graph.initializer:
            self.info[tensor.name] = (list(tensor.dims), tensor.data_type)
            self.stored_names.add(tensor.name)
        for node in graph.node:
            if node.op_type == 'Constant' and node.attribute[0].name == 'value':
                tensor = node.attribute[0].t
                self.info[node.output[0]] = (list(tensor.dims), tensor.data_type)
                self.stored_names.add(node.output[0])
        self.producer = {out: node for node in graph.node for out in node.output}
        # a stored tensor behind DequantizeLinear is a parameter at the stored bit width
        self.dequantized = {n.output[0]: n.input[0] for n in graph.node
                            if n.op_type == 'DequantizeLinear' and n.input[0] in self.stored_names}

    def is_param(self, name):
        return self.dequantized.get(name, name) in self.stored_names

    def stored(self, name):
        """(dims, elem_type) of a stored tensor, looking through DequantizeLinear."""
        return self.info[self.dequantized.get(name, name)]

    def param(self, name):
        """(dims, bits) of a stored tensor."""
        dims, elem_type = self.stored(name)
        return dims, _type_bits(elem_type)

    def shape(self, name):
        dims = self.info.get(name, (None, 0))[0]
        return None if dims is None or None in dims else tuple(dims)

    def is_open(self, name):
        """Whether static inference left the shape or the element type of ``name`` unknown."""
        return self.shape(name) is None or not self.info[name][1]

    def bits(self, name):
        return _type_bits(self.info.get(name, (None, 0))[1])

    def dot_input_bits(self, name):
        """Bits a conv multiplies with: a quantized activation arrives via DequantizeLinear."""
        node = self.producer.get(name)
        if node is not None and node.op_type == 'DequantizeLinear':
            return self.bits(node.input[0])
        return self.bits(name)

    def op_name(self, node):
        return node.name or node.output[0]

    def producer_name(self, name):
        """The op that computed tensor ``name``, looking through Q/DQ and Identity."""
        node = self.producer.get(name)
        while node is not None and node.op_type in _ONNX_PASS_THROUGH:
            node = self.producer.get(node.input[0])
        return self.op_name(node) if node is not None else ''

    def run_shapes(self, model, names):
        """Fill shapes that static inference left open by running the graph once."""
        onnx = _onnx()
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError as err:
            raise ProfilingError('ONNX shape inference left %s open and onnxruntime is not '
                                 'installed to run the graph' % sorted(names)[:3]) from err
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names))
        feeds = {}
        for value in probe.graph.input:
            if value.name not in self.stored_names:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
                feeds[value.name] = np.zeros(_dims(value), dtype=dtype)
        wanted = sorted(names)
        try:
            session = ort.InferenceSession(probe.SerializeToString(),
                                           providers=['CPUExecutionProvider'])
            arrays = session.run(wanted, feeds)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ProfilingError('ONNX shape inference left %s open and onnxruntime could not '
                                 'run the graph: %s' % (wanted[:3], str(err).splitlines()[0])
                                 ) from err
        for name, array in zip(wanted, arrays):
            self.info[name] = (list(array.shape), onnx.helper.np_dtype_to_tensor_dtype(
                array.dtype))


def trace_onnx(path_or_model, input_size=None):
    """Trace an ONNX model; ``input_size`` (int or (H, W)) is needed when H, W are dynamic."""
    model = _fixed_inputs(_load_onnx(path_or_model), input_size)
    graph = _OnnxGraph(model)
    kinds = [_onnx_kind(node) for node in model.graph.node]
    needed = set()
    for node, kind in zip(model.graph.node, kinds):
        if kind not in ('free', 'unknown'):
            needed.add(node.output[0])
        if kind in ('pool', 'transpose', 'conv', 'fc'):
            needed.add(node.input[0])
    open_names = {name for name in needed if graph.is_open(name)}
    if open_names:
        _LOG.debug('running the graph for %d shapes that inference left open', len(open_names))
        graph.run_shapes(model, open_names)
    return [_onnx_op(node, kind, graph) for node, kind in zip(model.graph.node, kinds)
            if node.op_type not in _ONNX_PASS_THROUGH]


def _onnx_kind(node):
    if node.op_type in _ONNX_FREE or node.op_type in _ONNX_PASS_THROUGH:
        return 'free'
    return _ONNX_KINDS.get(node.op_type, 'unknown')


def _onnx_attr(node, key, default):
    for attr in node.attribute:
        if attr.name == key:
            return _onnx().helper.get_attribute_value(attr)
    return default


def _onnx_op(node, kind, graph):
    """GraphOp of one ONNX node."""
    name, op_type = graph.op_name(node), node.op_type
    acts = [i for i in node.input if i and not graph.is_param(i)]
    producers = tuple(graph.producer_name(i) for i in acts)
    out_shape = graph.shape(node.output[0]) or ()
    if kind in ('conv', 'fc', 'bn'):
        return _onnx_weighted_op(node, name, kind, out_shape, producers, graph)
    extra = {}
    if kind == 'pool':
        in_shape = graph.shape(acts[0])
        spatial = in_shape[1:-1] if _onnx_attr(node, 'channels_last', 0) else in_shape[2:]
        window = math.prod(spatial) if 'Global' in op_type else math.prod(
            _onnx_attr(node, 'kernel_shape', [1]))
        extra = dict(window=window, pool_type='max' if 'Max' in op_type else 'avg',
                     act_bits=graph.bits(acts[0]))
    elif kind == 'transpose':
        in_shape = graph.shape(acts[0])
        perm = _onnx_attr(node, 'perm', list(reversed(range(len(in_shape)))))
        channels = _shuffle_channels(perm, in_shape)
        kind, extra = ('shuffle', dict(shuffle_channels=channels)) if channels else ('free', {})
    elif kind == 'unknown':  # float tensors are weights; integer ones are shapes or indices
        stored = [graph.stored(i) for i in node.input if i and graph.is_param(i)]
        extra = dict(weight_params=sum(math.prod(dims) for dims, elem_type in stored
                                       if elem_type in _FLOAT_TYPES))
    elif kind != 'free':
        if graph.info.get(node.output[0], (None, 0))[1] in _SHAPE_TYPES:
            kind = 'free'  # arithmetic on shapes, not on activations
        else:  # elementwise ops run at their tensors' own precision
            extra = dict(act_bits=max(graph.bits(i) for i in acts) if acts else 32)
    return GraphOp(name, op_type, kind, out_shape, producers, **extra)


def _onnx_weighted_op(node, name, kind, out_shape, producers, graph):
    op_type = node.op_type
    w_index, b_index = _ONNX_WEIGHTS[op_type]
    weight_name = node.input[w_index]
    if not graph.is_param(weight_name):
        if kind != 'fc':
            raise _computed_weight(op_type, name)
        # activation x activation product: one dot product per output, no weights
        return GraphOp(name, op_type, kind, out_shape, producers,
                       fan_in=graph.shape(node.input[0])[-1])
    weight, weight_bits = graph.param(weight_name)
    if op_type in ('Gemm', 'QGemm') and not _onnx_attr(node, 'transB', 0):
        weight = weight[::-1]  # stored (in, out) -> (out, in)
    elif op_type in ('MatMul', 'QLinearMatMul'):
        weight = [weight[-1], weight[-2]]
    has_bias = b_index is not None and len(node.input) > b_index and node.input[b_index]
    bias, bias_bits = graph.param(node.input[b_index]) if has_bias else (None, 32)
    bits = {} if kind == 'bn' else dict(weight_bits=weight_bits, bias_bits=bias_bits,
                                        act_bits=graph.dot_input_bits(node.input[0]))
    return _weighted_op(name, op_type, kind, out_shape, producers, weight, bias, **bits)
