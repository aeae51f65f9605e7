"""Export a HybridBlock to ONNX: MXNet's converter, then small graph passes, then strict checks.

MXNet 1.9.1's ``mx.onnx.export_model`` builds an opset-13 graph but stamps onnx's newest opset and
lists every weight as a graph input (which stops onnxruntime from folding and fusing). The passes
below fix both and tidy the graph; each is a function ``ModelProto -> ModelProto`` that leaves its
argument untouched, and ``graph_passes`` lists them in order, so more can be added. The passes that
make the graph fast in onnxruntime (channel shuffle as slices, channel padding) live in
``export.shuffle``.
"""
import collections
import dataclasses
import functools
import logging
import math
import os
import tempfile

import mxnet as mx
import numpy as np

from nas.errors import DependencyError, ExportError
from nas.atomic import atomic_paths
from .mxnet_symbol import trace

__all__ = ['SUPPORTED_OPSETS', 'ExportReport', 'export_onnx', 'check_opset', 'graph_passes',
           'drop_initializer_inputs', 'convert_opset', 'make_batch_dynamic', 'remove_identity',
           'fold_constants', 'collapse_reshapes', 'fuse_hard_sigmoid', 'fuse_hard_swish',
           'remove_unused']

_log = logging.getLogger(__name__)

SUPPORTED_OPSETS = range(11, 22)  # each run in onnxruntime 1.20 (newest: 21) by tests/test_onnx.py
_MXNET_OPSET = 13  # newest opset MXNet 1.9.1 has translations for; export_model always uses them
_BATCH = 'N'
_FOLD_LIMIT = 1 << 16  # never fold into a constant larger than this and larger than its inputs
_SKIP_FOLD = {'RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike',
              'Multinomial', 'Bernoulli', 'Dropout'}


@dataclasses.dataclass
class ExportReport:
    """What ``export_onnx`` wrote; shapes hold ``'N'`` for a dynamic batch."""
    path: str
    opset: int
    size_bytes: int
    inputs: dict
    outputs: dict
    node_count: int
    op_counts: dict
    checks: tuple


def export_onnx(net, path, input_shape, opset=13, dynamic_batch=False, ctx=mx.cpu(),
                shuffle='slices', channel_block=None):
    """Write ``net`` as an ONNX file at ``path`` (atomically) and return an ExportReport.

    ``shuffle`` picks the channel shuffle's form (``export.shuffle.SHUFFLE_FORMS``).
    ``channel_block=16`` pads channel counts with zero-weight channels to multiples of 16, which
    onnxruntime's blocked layout needs (``nas-export`` does this); the default keeps the graph's
    weights, and so its FLOPs and parameter counts, equal to the network's.
    """
    _import_onnx()  # fail before tracing when onnx is missing
    check_opset(opset)
    passes = graph_passes(opset, dynamic_batch, shuffle, channel_block)  # checks the options
    # first, so that an unwritable path fails fast
    with atomic_paths(path, error=ExportError) as (temp,):
        sym, params = trace(net, input_shape, ctx)
        model = _convert(sym, params, input_shape)
        for graph_pass in passes:
            model = graph_pass(model)
        checks = _check(model)
        data = model.SerializeToString()
        with open(temp, 'wb') as handle:
            handle.write(data)
    graph = model.graph
    op_counts = dict(collections.Counter(node.op_type for node in graph.node))
    _log.info('wrote %s: opset %d, %d nodes, %d bytes', path, opset, len(graph.node), len(data))
    return ExportReport(path=str(path), opset=opset, size_bytes=len(data),
                        inputs={v.name: _shape_of(v) for v in graph.input},
                        outputs={v.name: _shape_of(v) for v in graph.output},
                        node_count=len(graph.node), op_counts=op_counts, checks=checks)


def check_opset(opset):
    """Raise ExportError unless ``opset`` is one ``export_onnx`` can write."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError('opset %r is not supported; choose one of %d..%d (MXNet 1.9.1 translates '
                          'to opset 13, onnx converts from there)'
                          % (opset, SUPPORTED_OPSETS[0], SUPPORTED_OPSETS[-1]))


def graph_passes(opset, dynamic_batch=False, shuffle='slices', channel_block=None):
    """The post-processing applied by ``export_onnx``, in order."""
    from .shuffle import pad_channels, shuffle_passes  # imports this module's helpers
    passes = [drop_initializer_inputs, functools.partial(convert_opset, opset=opset)]
    if dynamic_batch:
        passes.append(make_batch_dynamic)
    passes += [remove_identity, fold_constants, collapse_reshapes, fuse_hard_sigmoid,
               fuse_hard_swish] + shuffle_passes(shuffle)
    if channel_block and channel_block > 1:
        passes.append(functools.partial(pad_channels, block=int(channel_block)))
    return passes + [remove_unused]


def _import_onnx():
    try:
        import onnx
        import onnx.reference  # noqa: F401  (used by fold_constants)
    except ImportError as err:
        raise DependencyError('ONNX export needs the onnx package (%s): pip install onnx'
                              % err) from err
    return onnx


def _convert(sym, params, input_shape):
    """MXNet's own converter, unmodified: weights as graph inputs, newest opset stamped."""
    onnx = _import_onnx()
    with tempfile.TemporaryDirectory() as folder:
        raw = os.path.join(folder, 'raw.onnx')
        try:
            mx.onnx.export_model(sym, params, [tuple(input_shape)], np.float32, raw)
        except OSError as err:
            raise ExportError("cannot write the ONNX converter's scratch file in %s: %s"
                              % (folder, err.strerror or err)) from err
        except Exception as err:  # third-party converter: any failure means "cannot export"
            raise ExportError("MXNet's ONNX converter cannot convert this network: %s: %s"
                              % (type(err).__name__, err)) from err
        return onnx.load(raw)


def _check(model):
    """Run onnx's checker and strict shape inference; return the names of the checks passed."""
    onnx = _import_onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError('the exported graph is invalid at opset %d: %s'
                          % (_opset_of(model), _first_line(err))) from err
    return ('onnx.checker.check_model(full_check)', 'onnx.shape_inference(strict_mode)')


def _first_line(err):
    return str(err).strip().splitlines()[0]


def _shape_of(value_info):
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)


def _copy(model):
    onnx = _import_onnx()
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def _opset_of(model):
    return next(op.version for op in model.opset_import if op.domain in ('', 'ai.onnx'))


def _constants(graph):
    from onnx import numpy_helper
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _producer_index(graph):
    return {name: index for index, node in enumerate(graph.node) for name in node.output}


def _readers(graph):
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _index(graph):
    """What a rewriting pass looks up: constant values, producer of each tensor, readers of
    each tensor, and the graph's output names."""
    return (_constants(graph), _producer_index(graph), _readers(graph),
            {v.name for v in graph.output})


def _replace_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


# ---------------------------------------------------------------- passes


def drop_initializer_inputs(model):
    """Keep weights as initializers only, so runtimes may treat them as constants."""
    model = _copy(model)
    weights = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def convert_opset(model, opset):
    """Label MXNet's graph with the opset it really uses, then move it to ``opset``.

    Upwards onnx's version converter rewrites the nodes; downwards (11, 12) it has no adapters, so
    the label is changed and ``export_onnx``'s checker rejects any node that opset cannot express.
    """
    onnx = _import_onnx()
    model = _copy(model)
    for entry in model.opset_import:
        if entry.domain in ('', 'ai.onnx'):
            entry.version = _MXNET_OPSET if opset >= _MXNET_OPSET else opset
    if opset > _MXNET_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, opset)
        except RuntimeError as err:
            raise ExportError('onnx cannot convert the graph from opset %d to %d: %s'
                              % (_MXNET_OPSET, opset, _first_line(err))) from err
    elif opset < _MXNET_OPSET:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as err:
            raise ExportError('the graph uses an operator form that opset %d lacks (%s); export '
                              'at opset %d or newer' % (opset, _first_line(err), _MXNET_OPSET)
                              ) from err
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    return model


def make_batch_dynamic(model):
    """Give the first dimension of every graph input and output the symbolic size ``N``."""
    model = _copy(model)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = _BATCH
    del model.graph.value_info[:]  # shapes inferred for a fixed batch are stale
    return model


def remove_identity(model):
    """Drop Identity nodes (MXNet emits one per Dropout) by rewiring their readers."""
    model = _copy(model)
    graph = model.graph
    outputs = {v.name for v in graph.output}
    readers = _readers(graph)
    kept = []
    for node in graph.node:
        if node.op_type != 'Identity' or node.output[0] in outputs:
            kept.append(node)
            continue
        for reader in readers.get(node.output[0], ()):
            for i, name in enumerate(reader.input):
                if name == node.output[0]:
                    reader.input[i] = node.input[0]
    _replace_nodes(graph, kept)
    return model


def fold_constants(model):
    """Replace every node computable at export time by an initializer.

    A node folds when all its inputs are constants, or when it is a Shape of a tensor whose shape
    is static (so with ``make_batch_dynamic`` shapes that depend on the batch stay computed).
    Repeats until nothing folds: a folded Reshape target makes the shapes after it static.
    """
    from onnx import numpy_helper
    model = _copy(model)
    graph = model.graph
    values = _constants(graph)
    outputs = {v.name for v in graph.output}
    while True:
        shapes = _static_shapes(model)
        kept = []
        for node in graph.node:
            folded = (None if outputs.intersection(node.output)
                      else _fold(node, values, shapes, model))
            if folded is None:
                kept.append(node)
                continue
            for name, value in zip(node.output, folded):
                values[name] = value
                graph.initializer.append(numpy_helper.from_array(value, name))
        if len(kept) == len(graph.node):
            return remove_unused(model)
        _replace_nodes(graph, kept)


def _static_shapes(model):
    """name -> shape for every tensor whose shape onnx can infer completely."""
    onnx = _import_onnx()
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tensor = value.type.tensor_type
        if tensor.HasField('shape') and all(d.HasField('dim_value') for d in tensor.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)
    return shapes


def _fold(node, values, shapes, model):
    """Output values of ``node`` if it can be computed now, else None."""
    from onnx import helper
    if node.domain not in ('', 'ai.onnx') or node.op_type in _SKIP_FOLD:
        return None
    if any(attr.type in (attr.GRAPH, attr.GRAPHS) for attr in node.attribute):
        return None
    if node.op_type == 'Shape' and node.input[0] not in values and node.input[0] in shapes:
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        dims = shapes[node.input[0]][attrs.get('start', 0):attrs.get('end')]
        return [np.array(dims, dtype=np.int64)]
    if not all(name in values for name in node.input if name):
        return None
    feeds = {name: values[name] for name in node.input if name}
    results = _evaluate(node, feeds, model)
    budget = max(_FOLD_LIMIT, sum(value.size for value in feeds.values()))
    if any(np.asarray(result).size > budget for result in results):
        return None
    return [np.asarray(result) for result in results]


def _evaluate(node, feeds, model):
    """Run one node with onnx's reference evaluator under the model's opsets."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                            value.shape) for name, value in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = helper.make_graph([node], 'fold', inputs, outputs)
    single = helper.make_model(graph, opset_imports=list(model.opset_import))
    return ReferenceEvaluator(single).run(None, feeds)


def collapse_reshapes(model):
    """Reshape(Reshape(x, a), b) -> Reshape(x, b) when b is a constant that copies no dimension."""
    model = _copy(model)
    graph = model.graph
    values, producers, readers, outputs = _index(graph)
    for node in graph.node:
        if node.op_type != 'Reshape' or node.input[1] not in values:
            continue
        allowzero = any(a.name == 'allowzero' and a.i for a in node.attribute)
        inner = graph.node[producers[node.input[0]]] if node.input[0] in producers else None
        if (inner is None or inner.op_type != 'Reshape' or inner.output[0] in outputs
                or len(readers[inner.output[0]]) != 1
                or (0 in values[node.input[1]] and not allowzero)):
            continue
        node.input[0] = inner.input[0]
    return remove_unused(model)


def _scalar(values, name, expected):
    value = values.get(name)
    return value is not None and value.size == 1 and value.ndim <= 1 and math.isclose(
        float(value.reshape(-1)[0]), expected, rel_tol=1e-6)


def fuse_hard_sigmoid(model):
    """Clip(x + 3, 0, 6) / 6 (gluoncv's hard-sigmoid) -> HardSigmoid(x, alpha=1/6, beta=0.5)."""
    from onnx import helper
    model = _copy(model)
    graph = model.graph
    values, producers, readers, outputs = _index(graph)

    def sole_producer(name, op_type):
        """Index of the ``op_type`` node making ``name`` if nothing else reads it, else None."""
        index = producers.get(name)
        if (index is None or graph.node[index].op_type != op_type or name in outputs
                or len(readers[name]) != 1):
            return None
        return index

    removed, fused = set(), {}
    for index, node in enumerate(graph.node):
        scaled = (node.op_type == 'Div' and _scalar(values, node.input[1], 6.0)) or (
            node.op_type == 'Mul' and _scalar(values, node.input[1], 1 / 6))
        clip = sole_producer(node.input[0], 'Clip') if scaled else None
        if clip is None or len(graph.node[clip].input) != 3 or not (
                _scalar(values, graph.node[clip].input[1], 0.0)
                and _scalar(values, graph.node[clip].input[2], 6.0)):
            continue
        add = sole_producer(graph.node[clip].input[0], 'Add')
        plus = [] if add is None else [
            i for i, name in enumerate(graph.node[add].input) if _scalar(values, name, 3.0)]
        if not plus:
            continue
        removed.update((add, clip))
        fused[index] = helper.make_node('HardSigmoid', [graph.node[add].input[1 - plus[0]]],
                                        [node.output[0]], name=node.name or None,
                                        alpha=1 / 6, beta=0.5)
    _replace_nodes(graph, [fused.get(i, n) for i, n in enumerate(graph.node) if i not in removed])
    return remove_unused(model)


def fuse_hard_swish(model):
    """x * HardSigmoid(x, 1/6, 0.5) -> HardSwish(x), from opset 14 on (where HardSwish exists)."""
    from onnx import helper
    if _opset_of(model) < 14:
        return model
    model = _copy(model)
    graph = model.graph
    producers = _producer_index(graph)
    readers = _readers(graph)
    outputs = {v.name for v in graph.output}
    removed, fused = set(), {}
    for index, node in enumerate(graph.node):
        if node.op_type != 'Mul':
            continue
        for data, gate in (node.input[:], node.input[::-1]):
            sig = producers.get(gate)
            if (sig is not None and graph.node[sig].op_type == 'HardSigmoid'
                    and graph.node[sig].input[0] == data and _is_hard_sigmoid(graph.node[sig])
                    and gate not in outputs and len(readers[gate]) == 1):
                removed.add(sig)
                fused[index] = helper.make_node('HardSwish', [data], [node.output[0]],
                                                name=node.name or None)
                break
    _replace_nodes(graph, [fused.get(i, n) for i, n in enumerate(graph.node) if i not in removed])
    return model


def _is_hard_sigmoid(node):
    """True when a HardSigmoid node has HardSwish's constants (alpha 1/6, beta 0.5)."""
    attrs = {a.name: a.f for a in node.attribute}
    return (math.isclose(attrs.get('alpha', 0.2), 1 / 6, rel_tol=1e-6)
            and math.isclose(attrs.get('beta', 0.5), 0.5, rel_tol=1e-6))


def remove_unused(model):
    """Drop nodes whose outputs nobody reads and initializers no node reads."""
    model = _copy(model)
    _prune(model)
    return model


def _prune(model):
    """``remove_unused`` in place."""
    graph = model.graph
    needed = {v.name for v in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    _replace_nodes(graph, reversed(kept))
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
