"""The exporter's clean-up passes, each a function ``ModelProto -> ModelProto`` that leaves its
argument untouched: weights as initializers, the real opset, a dynamic batch, no Identity, constants
folded, Reshape chains collapsed, gluoncv's hard-sigmoid / hard-swish as single nodes.
"""
import math

import numpy as np

from nas.errors import ExportError
from .onnx_graph import (constants, copy_model, first_line, graph_index, import_onnx, opset_of,
                         producer_index, prune, readers_of, replace_nodes)

__all__ = ['MXNET_OPSET', 'drop_initializer_inputs', 'convert_opset', 'make_batch_dynamic',
           'remove_identity', 'fold_constants', 'collapse_reshapes', 'fuse_hard_sigmoid',
           'fuse_hard_swish', 'remove_unused']

MXNET_OPSET = 13  # newest opset MXNet 1.9.1 has translations for; export_model always uses them
_BATCH = 'N'
_FOLD_LIMIT = 1 << 16  # never fold into a constant larger than this and larger than its inputs
_SKIP_FOLD = {'RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike',
              'Multinomial', 'Bernoulli', 'Dropout'}


def drop_initializer_inputs(model):
    """Keep weights as initializers only, so runtimes may treat them as constants."""
    model = copy_model(model)
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
    onnx = import_onnx()
    model = copy_model(model)
    for entry in model.opset_import:
        if entry.domain in ('', 'ai.onnx'):
            entry.version = MXNET_OPSET if opset >= MXNET_OPSET else opset
    if opset > MXNET_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, opset)
        except RuntimeError as err:
            raise ExportError('onnx cannot convert the graph from opset %d to %d: %s'
                              % (MXNET_OPSET, opset, first_line(err))) from err
    elif opset < MXNET_OPSET:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as err:
            raise ExportError('the graph uses an operator form that opset %d lacks (%s); export '
                              'at opset %d or newer' % (opset, first_line(err), MXNET_OPSET)
                              ) from err
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    return model


def make_batch_dynamic(model):
    """Give the first dimension of every graph input and output the symbolic size ``N``."""
    model = copy_model(model)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = _BATCH
    del model.graph.value_info[:]  # shapes inferred for a fixed batch are stale
    return model


def remove_identity(model):
    """Drop Identity nodes (MXNet emits one per Dropout) by rewiring their readers."""
    import onnxoptimizer
    return onnxoptimizer.optimize(model, ['eliminate_identity'])


def fold_constants(model):
    """Replace every node computable at export time by an initializer.

    A node folds when all its inputs are constants, or when it is a Shape of a tensor whose shape
    is static (so with ``make_batch_dynamic`` shapes that depend on the batch stay computed).
    Repeats until nothing folds: a folded Reshape target makes the shapes after it static.
    Hand-written: onnxoptimizer has no general constant folding (only fixed patterns).
    """
    from onnx import numpy_helper
    model = copy_model(model)
    graph = model.graph
    values = constants(graph)
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
        replace_nodes(graph, kept)


def _static_shapes(model):
    """name -> shape for every tensor whose shape onnx can infer completely."""
    onnx = import_onnx()
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
    model = copy_model(model)
    graph = model.graph
    values, producers, readers, outputs = graph_index(graph)
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
    model = copy_model(model)
    graph = model.graph
    values, producers, readers, outputs = graph_index(graph)

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
    replace_nodes(graph, [fused.get(i, n) for i, n in enumerate(graph.node) if i not in removed])
    return remove_unused(model)


def fuse_hard_swish(model):
    """x * HardSigmoid(x, 1/6, 0.5) -> HardSwish(x), from opset 14 on (where HardSwish exists)."""
    from onnx import helper
    if opset_of(model) < 14:
        return model
    model = copy_model(model)
    graph = model.graph
    producers = producer_index(graph)
    readers = readers_of(graph)
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
    replace_nodes(graph, [fused.get(i, n) for i, n in enumerate(graph.node) if i not in removed])
    return model


def _is_hard_sigmoid(node):
    """True when a HardSigmoid node has HardSwish's constants (alpha 1/6, beta 0.5)."""
    attrs = {a.name: a.f for a in node.attribute}
    return (math.isclose(attrs.get('alpha', 0.2), 1 / 6, rel_tol=1e-6)
            and math.isclose(attrs.get('beta', 0.5), 0.5, rel_tol=1e-6))


def remove_unused(model):
    """Drop nodes whose outputs nobody reads and initializers no node reads."""
    model = copy_model(model)
    prune(model)
    return model
