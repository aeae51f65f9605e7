"""Tracer of ONNX models (float, float16, QDQ and QOperator int8) as ``GraphOp`` records.

Shapes come from ONNX shape inference; where it leaves one open (some exporters' Reshape chains),
the graph is run once in onnxruntime to read it. Bit widths come from the tensor types.
"""
import logging
import math
import os

from .errors import ArchError, DependencyError, ProfilingError
from .graph_ops import GraphOp, computed_weight_error, shuffle_channels, weighted_op

__all__ = ['trace_onnx']

log = logging.getLogger(__name__)

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
        log.debug('running the graph for %d shapes that inference left open', len(open_names))
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
        channels = shuffle_channels(perm, in_shape)
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
            raise computed_weight_error(op_type, name)
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
    return weighted_op(name, op_type, kind, out_shape, producers, weight, bias, **bits)
