"""ONNX graph helpers shared by the exporter's clean-up passes (``export.onnx_passes``) and the
channel passes (``export.shuffle``, ``export.channels``): copies, lookups, pruning and a graph view
with lazily read weights and inferred shapes.

onnx is imported inside the functions: ``export`` works without it until an ONNX graph is made.
"""
import collections
import re

import numpy as np

from nas.errors import DependencyError

__all__ = ['import_onnx', 'copy_model', 'opset_of', 'first_line', 'shape_of', 'constants',
           'producer_index', 'readers_of', 'graph_index', 'replace_nodes', 'prune', 'finish',
           'GraphView', 'infer_shapes']


def import_onnx():
    """The onnx module, or DependencyError saying how to install it."""
    try:
        import onnx
        import onnx.reference  # noqa: F401  (used by fold_constants and the shuffle probe)
    except ImportError as err:
        raise DependencyError('ONNX export needs the onnx package (%s): pip install onnx'
                              % err) from err
    return onnx


def first_line(err):
    return str(err).strip().splitlines()[0]


def shape_of(value_info):
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)


def copy_model(model):
    onnx = import_onnx()
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new


def opset_of(model):
    return next(op.version for op in model.opset_import if op.domain in ('', 'ai.onnx'))


def constants(graph):
    from onnx import numpy_helper
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def producer_index(graph):
    return {name: index for index, node in enumerate(graph.node) for name in node.output}


def readers_of(graph):
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def graph_index(graph):
    """What a rewriting pass looks up: constant values, producer of each tensor, readers of
    each tensor, and the graph's output names."""
    return (constants(graph), producer_index(graph), readers_of(graph),
            {v.name for v in graph.output})


def replace_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


def prune(model):
    """Drop, in place, nodes whose outputs nobody reads and initializers no node reads."""
    graph = model.graph
    needed = {v.name for v in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    replace_nodes(graph, reversed(kept))
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def finish(model):
    """``prune`` and drop the inferred shapes (stale after a rewrite); returns the model."""
    prune(model)
    del model.graph.value_info[:]
    return model


# ---------------------------------------------------------------------------------- graph view


class GraphView:
    """A ModelProto with the indexes the passes need; rebuilt after every structural change.

    Initializers are read into numpy on demand, and shapes are inferred on a copy without the
    weights (serialising megabytes of weights for every inference would dominate the passes).
    """

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self._tensors = {t.name: t for t in self.graph.initializer}
        self.values = LazyArrays(self._tensors)
        self.outputs = {v.name for v in self.graph.output}
        self.producer = {name: node for node in self.graph.node for name in node.output}
        self.readers = collections.defaultdict(list)
        for node in self.graph.node:
            for name in set(node.input):
                self.readers[name].append(node)
        self.shapes = infer_shapes(model)
        self._serial = 0

    def channels(self, name):
        shape = self.shapes.get(name)
        return shape[1] if shape and len(shape) == 4 else None

    def attr(self, node, key, default=None):
        from onnx import helper
        for attr in node.attribute:
            if attr.name == key:
                return helper.get_attribute_value(attr)
        return default

    def constant(self, name):
        return self.values.get(name)

    def add_constant(self, base, value):
        """A new initializer holding ``value``; returns its (unused so far) name."""
        from onnx import numpy_helper
        name = self.fresh(base)
        value = np.ascontiguousarray(value)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self._tensors[name] = self.graph.initializer[-1]
        self.values[name] = value
        return name

    def set_input_constant(self, node, index, value):
        """Point ``node.input[index]`` at a new initializer holding ``value`` (never shared)."""
        node.input[index] = self.add_constant(node.input[index], value)

    def fresh(self, base):
        """A tensor name not used in the graph yet, ``base`` plus a serial number."""
        base = re.sub(r'_p\d+$', '', base)  # rewritten again: keep names from growing
        while True:
            self._serial += 1
            name = '%s_p%d' % (base, self._serial)
            if name not in self.values and name not in self.producer and name not in self.readers:
                return name


class LazyArrays(dict):
    """name -> numpy array of an initializer, converted on first use."""

    def __init__(self, tensors):
        super().__init__()
        self._tensors = tensors

    def __missing__(self, name):
        from onnx import numpy_helper
        if name not in self._tensors:
            raise KeyError(name)
        value = numpy_helper.to_array(self._tensors[name])
        self[name] = value
        return value

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in self._tensors


def infer_shapes(model):
    """name -> shape (None for unknown dims) of every tensor onnx's shape inference can type."""
    from onnx import helper, shape_inference
    small, stand_ins = [], []
    for tensor in model.graph.initializer:
        if tensor.data_type == tensor.FLOAT and np.prod(tensor.dims) > 64:
            stand_ins.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                           list(tensor.dims)))
        else:
            small.append(tensor)
    graph = helper.make_graph(model.graph.node, 'shapes', list(model.graph.input) + stand_ins,
                              model.graph.output, initializer=small)
    light = helper.make_model(graph, opset_imports=list(model.opset_import),
                              ir_version=model.ir_version)
    inferred = shape_inference.infer_shapes(light).graph
    shapes = {}
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tensor = value.type.tensor_type
        if tensor.HasField('shape'):
            shapes[value.name] = tuple(d.dim_value if d.HasField('dim_value') else None
                                       for d in tensor.shape.dim)
    return shapes


