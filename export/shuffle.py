"""Graph passes that take the channel shuffle out of the deployment graph (SPEC §1.4, §7).

MXNet exports each stride-1 unit's shuffle as Reshape -> Transpose -> Reshape (plus shape
arithmetic for ``reshape_like`` when the batch is dynamic) followed by two Slices. Each copies the
whole tensor, and none of them runs in onnxruntime's blocked (NCHWc) layout. The shuffle's real job
is only to pick two channel sets, so:

* ``shuffle_to_gather`` finds every Reshape/Transpose chain that permutes the channels of a 4-D
  tensor (by running it on a probe tensor, so any spelling of the shuffle is recognised) and
  replaces the chain and the Slices after it by one ``Gather(x, indices, axis=1)`` per half.
* ``gather_to_slices`` then chooses the channel order of the tensors around those Gathers: every
  convolution's output order is free (permute its weight rows), every 1x1 convolution's input
  order is free (permute its weight columns) and per-channel ops carry an order through. Gathers
  of a Concat become Concats of Gathers of its parts, Gathers of Gathers compose, and each tensor's
  channels are sorted by the Gather that reads them, so every Gather becomes a contiguous Slice (or
  disappears). The graph computes the same function with fewer copies.

A "channel class" is a set of tensors joined by per-channel ops (activations, depthwise convs,
pooling, SE's broadcast multiply, BatchNormalization): they must share one channel order. A class
can be reordered when every node at its border can absorb the permutation (see ``_Reorder``).
"""
import collections
import dataclasses
import logging
import re

import numpy as np

from nas.errors import ExportError

__all__ = ['SHUFFLE_FORMS', 'ShuffleSite', 'find_channel_shuffles', 'shuffle_to_gather',
           'gather_to_slices', 'shuffle_passes', 'pad_channels']

_log = logging.getLogger(__name__)

SHUFFLE_FORMS = ('reshape', 'gather', 'slices')  # as traced; one Gather per half; permuted slices
_LAYOUT_OPS = ('Reshape', 'Transpose')
_UNARY = {'Relu', 'HardSwish', 'HardSigmoid', 'Sigmoid', 'Tanh', 'LeakyRelu', 'Elu', 'Clip',
          'Identity', 'Dropout', 'GlobalAveragePool', 'GlobalMaxPool', 'AveragePool', 'MaxPool'}
_BINARY = {'Mul', 'Add', 'Sub', 'Div', 'Max', 'Min', 'Sum'}


def shuffle_passes(form):
    """The passes that give the channel shuffle its ``form`` (one of SHUFFLE_FORMS)."""
    if form not in SHUFFLE_FORMS:
        raise ExportError('shuffle form %r is unknown; choose one of %s'
                          % (form, ', '.join(SHUFFLE_FORMS)))
    return {'reshape': [], 'gather': [shuffle_to_gather],
            'slices': [shuffle_to_gather, gather_to_slices]}[form]


@dataclasses.dataclass
class ShuffleSite:
    """Layout ops that map ``source`` to ``target``, ``target[:, j] = source[:, perm[j]]``."""
    source: str
    target: str
    perm: np.ndarray
    nodes: list  # indices of the chain and of its shape arithmetic, in graph order


# ---------------------------------------------------------------------------------- graph view


class _Graph:
    """A ModelProto with the indexes the passes need; rebuilt after every structural change.

    Initializers are read into numpy on demand, and shapes are inferred on a copy without the
    weights (serialising megabytes of weights for every inference would dominate the passes).
    """

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self._tensors = {t.name: t for t in self.graph.initializer}
        self.values = _LazyArrays(self._tensors)
        self.outputs = {v.name for v in self.graph.output}
        self.producer = {name: node for node in self.graph.node for name in node.output}
        self.readers = collections.defaultdict(list)
        for node in self.graph.node:
            for name in set(node.input):
                self.readers[name].append(node)
        self.shapes = _infer_shapes(model)
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


class _LazyArrays(dict):
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


def _infer_shapes(model):
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


def _finish(model):
    """Drop what nothing reads any more (in place) and return the model."""
    from .onnx import _prune
    _prune(model)
    del model.graph.value_info[:]  # stale after a rewrite
    return model


def _copy(model):
    from .onnx import _copy as copy_model
    return copy_model(model)


# ------------------------------------------------------------------------------- recognition


def find_channel_shuffles(model):
    """Every Reshape/Transpose chain that only permutes the channels of a 4-D tensor."""
    view = _Graph(model)
    index = {id(node): i for i, node in enumerate(view.graph.node)}
    sites = []
    for node in view.graph.node:
        if node.op_type != 'Reshape' or len(view.shapes.get(node.input[0], ())) != 4:
            continue
        start = view.producer.get(node.input[0])
        if start is not None and start.op_type in _LAYOUT_OPS:
            continue  # inside a chain, not at its head
        site = _chain_from(view, node.input[0], index)
        if site is not None:
            sites.append(site)
    return sites


def _chain_from(view, source, index):
    """The ShuffleSite starting at ``source``, or None when what follows is no channel shuffle."""
    chain, current = [], source
    while True:
        data = [r for r in view.readers[current] if r.op_type in _LAYOUT_OPS
                and r.input[0] == current]
        others = [r for r in view.readers[current] if r not in data and r.op_type != 'Shape']
        if current != source and (others or current in view.outputs or len(data) != 1):
            break
        if len(data) != 1:
            return None
        chain.append(data[0])
        current = data[0].output[0]
    target = current
    if len(chain) < 2 or None in view.shapes[source][1:]:
        return None  # the probe checks the target's shape
    region = {source} | {n.output[0] for n in chain}
    side = _shape_arithmetic(view, chain, region)
    if side is None:
        return None
    members = {id(n) for n in chain + side}
    for node in chain[:-1] + side:  # nothing outside may read the chain's inner tensors
        if any(id(r) not in members for name in node.output for r in view.readers[name]) or \
                set(node.output) & view.outputs:
            return None
    perm = _probe(view, chain + side, source, target)
    if perm is None:
        return None
    return ShuffleSite(source, target, perm, sorted(index[id(n)] for n in chain + side))


def _shape_arithmetic(view, chain, region):
    """Nodes computing the chain's non-constant Reshape targets from shapes of ``region``."""
    side, seen = [], set()
    stack = [n.input[1] for n in chain if n.op_type == 'Reshape' and n.input[1] not in view.values]
    while stack:
        name = stack.pop()
        if name in seen or name in view.values:
            continue
        seen.add(name)
        node = view.producer.get(name)
        if node is None:
            return None
        if node.op_type == 'Shape':
            if node.input[0] not in region:
                return None
        else:
            stack.extend(i for i in node.input if i)
        side.append(node)
    return side


def _probe(view, nodes, source, target):
    """Run ``nodes`` on distinct integers; the channel permutation they apply, or None."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    order = {id(n): i for i, n in enumerate(view.graph.node)}
    nodes = sorted(nodes, key=lambda n: order[id(n)])
    batch = view.shapes[source][0] or 2
    shape = (batch,) + tuple(view.shapes[source][1:])
    probe = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    inits = [view._tensors[c] for c in {i for n in nodes for i in n.input if i in view.values}]
    graph = helper.make_graph(
        nodes, 'probe', [helper.make_tensor_value_info(source, TensorProto.INT64, shape)],
        [helper.make_empty_tensor_value_info(target)], initializer=inits)
    single = helper.make_model(graph, opset_imports=list(view.model.opset_import))
    try:
        out = ReferenceEvaluator(single).run(None, {source: probe})[0]
    except Exception as err:  # a chain the reference cannot run is simply not rewritten
        _log.debug('probe of %s failed: %s', source, err)
        return None
    if out.shape != probe.shape:
        return None
    plane = shape[2] * shape[3]
    perm = (out[0, :, 0, 0] // plane) % shape[1]
    if not np.array_equal(out, probe[:, perm]):
        return None
    return perm.astype(np.int64)


# ------------------------------------------------------------------------------------ gather


def shuffle_to_gather(model):
    """Each channel shuffle and the Slices reading it -> ``Gather(x, indices, axis=1)`` nodes.

    Repeats until none is left: with a dynamic batch, shapes after a shuffle are only known to
    onnx's shape inference once that shuffle is a Gather.
    """
    count, copied = 0, False
    while True:
        sites = find_channel_shuffles(model)
        if not sites:
            _log.info('replaced %d channel shuffle(s) by Gathers', count)
            return model
        if not copied:
            model, copied = _copy(model), True
        model = _replace_sites(model, sites)
        count += len(sites)


def _replace_sites(model, sites):
    view = _Graph(model)
    nodes = list(view.graph.node)
    dropped = set()
    for site in sites:
        dropped.update(site.nodes)
        for reader in view.readers[site.target]:
            span = _channel_slice(view, reader, len(site.perm))
            if span is not None:
                reader.CopyFrom(_gather_node(view, site.source, site.perm[span], reader.output[0]))
        last = next(i for i in site.nodes if site.target in nodes[i].output)
        dropped.discard(last)
        nodes[last].CopyFrom(_gather_node(view, site.source, site.perm, site.target))
    del view.graph.node[:]
    view.graph.node.extend(node for i, node in enumerate(nodes) if i not in dropped)
    return _finish(model)


def _gather_node(view, data, indices, output):
    from onnx import helper
    name = view.add_constant(output + '_idx', np.asarray(indices, np.int64))
    return helper.make_node('Gather', [data, name], [output], name=output, axis=1)


def _channel_slice(view, node, channels):
    """``slice(start, end)`` when ``node`` is a unit-step Slice of axis 1, else None."""
    if node.op_type != 'Slice' or len(node.input) < 4:
        return None
    parts = [view.constant(name) for name in node.input[1:]]
    if any(part is None for part in parts):
        return None
    starts, ends, axes = (np.asarray(p).reshape(-1) for p in parts[:3])
    steps = np.asarray(parts[3]).reshape(-1) if len(parts) > 3 else np.ones(1, np.int64)
    if len(axes) != 1 or int(axes[0]) % 4 != 1 or int(steps[0]) != 1:
        return None
    start, end = (int(np.clip(v + channels if v < 0 else v, 0, channels))
                  for v in (starts[0], ends[0]))
    return slice(start, end)


# ---------------------------------------------------------------------- channel classes


def _axis1_gather(view, node):
    return (node.op_type == 'Gather' and view.attr(node, 'axis', 0) in (1, -3)
            and view.constant(node.input[1]) is not None
            and view.constant(node.input[1]).ndim == 1)


def _plain_conv(view, node):
    """A Conv whose input and output channel orders are both free (group 1, constant weights)."""
    return (node.op_type == 'Conv' and view.attr(node, 'group', 1) == 1
            and view.constant(node.input[1]) is not None
            and (len(node.input) < 3 or not node.input[2] or view.constant(node.input[2]) is not None))


def _per_channel(view, node):
    """``(data tensors, [(input index, axis)] of per-channel constants)`` when ``node`` treats each
    channel on its own (output channel j depends only on input channel j), else None."""
    out = node.output[0]
    channels = view.channels(out)
    if channels is None:
        return None
    if node.op_type in _UNARY:
        extra = [i for i in node.input[1:] if i]
        if any(view.constant(i) is None or view.constant(i).size != 1 for i in extra):
            return None
        return [node.input[0], out], []
    if node.op_type == 'BatchNormalization' and len(node.output) == 1:
        return [node.input[0], out], [(i, 0) for i in range(1, 5)]
    if node.op_type == 'Conv':
        weight = view.constant(node.input[1])
        if (weight is None or view.attr(node, 'group', 1) != channels or weight.shape[1] != 1
                or view.channels(node.input[0]) != channels):
            return None
        params = [(1, 0)] + ([(2, 0)] if len(node.input) > 2 and node.input[2] else [])
        if any(view.constant(node.input[i]) is None for i, _ in params):
            return None
        return [node.input[0], out], params
    if node.op_type in _BINARY:
        data, params = [out], []
        for i, name in enumerate(node.input):
            value = view.constant(name)
            if value is None:
                if view.channels(name) != channels:
                    return None
                data.append(name)
            elif value.size != 1:
                axis = _channel_axis_of_constant(value, channels)
                if axis is None:
                    return None
                params.append((i, axis))
        return data, params
    return None


def _channel_axis_of_constant(value, channels):
    """Axis of a broadcast constant that runs over the channels ((1, C, 1, 1) or (C, 1, 1))."""
    shape = (1,) * (4 - value.ndim) + value.shape
    if value.ndim <= 4 and shape[1] == channels and value.size == channels:
        return value.ndim - 3
    return None


def _class_of(view, name):
    """The tensors that must share ``name``'s channel order (joined by per-channel ops)."""
    members, stack = {name}, [name]
    while stack:
        current = stack.pop()
        nodes = list(view.readers[current])
        if current in view.producer:
            nodes.append(view.producer[current])
        for node in nodes:
            joined = _per_channel(view, node)
            if joined is None:
                continue
            for tensor in joined[0]:
                if tensor not in members:
                    members.add(tensor)
                    stack.append(tensor)
    return members


class _Reorder:
    """A planned channel permutation of one class: ``new[:, k] = old[:, q[k]]`` for each member.

    ``plan`` walks the class's border and returns False when some node cannot absorb the
    permutation; ``apply`` then rewrites weights, biases and indices. Borders that absorb it:
    a group-1 Conv reading the class (weight columns) or producing it (weight rows and bias), a
    Gather on axis 1 reading it (indices remapped) or producing it (indices permuted), a Concat
    reading it (the Concat's own class is reordered blockwise, recursively), and a Shape.
    """

    def __init__(self, view):
        self.view = view
        self.actions = []
        self.done = set()

    def plan(self, name, q, origin=None):
        view = self.view
        members = _class_of(view, name)
        q = np.asarray(q, np.int64)
        inverse = np.empty_like(q)
        inverse[q] = np.arange(len(q))
        for tensor in members:
            if tensor in view.outputs or view.channels(tensor) != len(q):
                return False
            producer = view.producer.get(tensor)
            nodes = [(producer, 'out')] if producer is not None else [(None, 'out')]
            nodes += [(reader, 'in') for reader in view.readers[tensor]]
            for node, side in nodes:
                if not self._border(node, side, tensor, members, q, inverse, origin):
                    return False
        return True

    def _border(self, node, side, tensor, members, q, inverse, origin):
        view = self.view
        if node is None:
            return False  # a graph input has a fixed order
        key = (id(node), side, tensor)
        if key in self.done or node is origin:
            return True
        self.done.add(key)
        joined = _per_channel(view, node)
        if joined is not None and set(joined[0]) <= members:
            if (id(node), 'params') not in self.done:
                self.done.add((id(node), 'params'))
                for index, axis in joined[1]:
                    self.actions.append((node, index, axis, q))
            return True
        if node.op_type == 'Shape':
            return True
        if _plain_conv(view, node):
            if side == 'out':
                self.actions.append((node, 1, 0, q))
                if len(node.input) > 2 and node.input[2]:
                    self.actions.append((node, 2, 0, q))
                return True
            if node.input[0] == tensor and tensor not in node.input[1:]:
                self.actions.append((node, 1, 1, q))
                return True
            return False
        if _axis1_gather(view, node):
            if side == 'out':
                self.actions.append((node, 1, 'take', q))
                return True
            if node.input[0] == tensor:
                self.actions.append((node, 1, 'take_into', inverse))
                return True
            return False
        if node.op_type == 'Concat' and view.attr(node, 'axis') in (1, -3) and side == 'in':
            if list(node.input).count(tensor) != 1 or (id(node), 'concat') in self.done:
                return False  # two inputs of one Concat in one class: no blockwise order
            self.done.add((id(node), 'concat'))
            sizes = [view.channels(i) for i in node.input]
            if None in sizes:
                return False
            position = list(node.input).index(tensor)
            offset = sum(sizes[:position])
            block = np.arange(sum(sizes))
            block[offset:offset + len(q)] = offset + q
            return self.plan(node.output[0], block, origin=node)
        return False

    def apply(self):
        view = self.view
        for node, index, axis, q in self.actions:
            value = view.constant(node.input[index])
            if axis == 'take':
                value = value[q]
            elif axis == 'take_into':
                value = q[value]
            else:
                value = np.take(value, q, axis=axis)
            view.set_input_constant(node, index, value)


def _try_reorder(view, name, q):
    """Reorder the class of ``name`` by ``q`` if every border absorbs it; True when done."""
    if np.array_equal(q, np.arange(len(q))):
        return True
    reorder = _Reorder(view)
    if not reorder.plan(name, q):
        return False
    reorder.apply()
    return True


# ------------------------------------------------------------------------------------ slices


def gather_to_slices(model):
    """Turn channel Gathers into contiguous Slices by choosing the channel order of tensors.

    1. sort each Gather's indices (its readers absorb the order);
    2. Gather(Concat(a, b)) -> Concat(Gather(a), Gather(b)), Gather(Gather(x)) -> Gather(x);
    3. sort each tensor's channels by the Gathers reading it, so each reads a contiguous run;
    4. a Gather of a contiguous ascending run -> Slice, of everything in order -> nothing.
    """
    if not any(node.op_type == 'Gather' for node in model.graph.node):
        return model
    model = _copy(model)
    _sort_gathers(_Graph(model))
    while _expand_gathers(_Graph(model)):
        model = _finish(model)
    model = _finish(model)
    _sort_gathers(_Graph(model))
    _make_contiguous(_Graph(model))
    view = _Graph(model)
    _gathers_to_slices(view)
    return _finish(model)


def _sort_gathers(view):
    for node in list(view.graph.node):
        if _axis1_gather(view, node):
            indices = view.constant(node.input[1])
            _try_reorder(view, node.output[0], np.argsort(indices, kind='stable'))


def _expand_gathers(view):
    """One sweep of step 2; True when something changed."""
    from onnx import helper
    changed = False
    nodes = []
    for node in view.graph.node:
        source = view.producer.get(node.input[0]) if node.input else None
        if _axis1_gather(view, node) and source is not None and _axis1_gather(view, source):
            inner = view.constant(source.input[1])
            view.set_input_constant(node, 1, inner[view.constant(node.input[1])])
            node.input[0] = source.input[0]
            changed = True
        elif (_axis1_gather(view, node) and source is not None and source.op_type == 'Concat'
              and view.attr(source, 'axis') in (1, -3)
              and None not in [view.channels(i) for i in source.input]):
            nodes.extend(_split_gather(view, node, source))
            changed = True
            continue
        elif node.op_type == 'Concat' and view.attr(node, 'axis') in (1, -3):
            flat = []
            for name in node.input:
                inner = view.producer.get(name)
                if (inner is not None and inner.op_type == 'Concat' and name not in view.outputs
                        and view.attr(inner, 'axis') in (1, -3) and len(view.readers[name]) == 1):
                    flat.extend(inner.input)
                    changed = True
                else:
                    flat.append(name)
            if len(flat) != len(node.input):
                node.CopyFrom(helper.make_node('Concat', flat, list(node.output), name=node.name,
                                               axis=1))
        nodes.append(node)
    del view.graph.node[:]
    view.graph.node.extend(_topological(nodes))
    return changed


def _split_gather(view, node, concat):
    """Gather(Concat(parts), idx) -> Gathers of runs of idx within one part, then a Concat."""
    from onnx import helper
    sizes = [view.channels(i) for i in concat.input]
    starts = np.cumsum([0] + sizes)
    indices = view.constant(node.input[1])
    part_of = np.searchsorted(starts, indices, side='right') - 1
    pieces, new = [], []
    begin = 0
    for end in range(1, len(indices) + 1):
        if end < len(indices) and part_of[end] == part_of[begin]:
            continue
        part = part_of[begin]
        name = view.fresh(node.output[0] + '_piece')
        new.append(_gather_node(view, concat.input[part], indices[begin:end] - starts[part], name))
        shape = view.shapes[node.output[0]]
        view.shapes[name] = (shape[0], end - begin) + tuple(shape[2:])
        pieces.append(name)
        begin = end
    new.append(helper.make_node('Concat', pieces, [node.output[0]], name=node.name, axis=1))
    return new


def _topological(nodes):
    """``nodes`` in an order where every tensor is produced before it is read."""
    made = {name for node in nodes for name in node.output}
    ready = set()
    pending = list(nodes)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name not in made or name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError('internal error: the rewritten graph has a cycle')
        pending = rest
    return ordered


def _make_contiguous(view):
    """Step 3: sort each tensor's channels by the Gathers that read it."""
    for name, readers in list(view.readers.items()):
        gathers = [r for r in readers if _axis1_gather(view, r) and r.input[0] == name]
        channels = view.channels(name)
        if not gathers or channels is None:
            continue
        order, seen = [], np.zeros(channels, bool)
        for gather in gathers:
            fresh = [i for i in sorted(view.constant(gather.input[1])) if not seen[i]]
            seen[fresh] = True
            order.extend(fresh)
        order.extend(np.flatnonzero(~seen))
        _try_reorder(view, name, np.asarray(order, np.int64))


def _gathers_to_slices(view):
    """Step 4, and a Concat of one tensor -> that tensor."""
    from onnx import helper
    rename = {}
    nodes = []
    for node in view.graph.node:
        if _axis1_gather(view, node):
            indices = view.constant(node.input[1])
            start = int(indices[0]) if len(indices) else 0
            if np.array_equal(indices, np.arange(start, start + len(indices))):
                if len(indices) == view.channels(node.input[0]) and \
                        node.output[0] not in view.outputs:
                    rename[node.output[0]] = node.input[0]
                    continue
                bounds = [view.add_constant(node.output[0] + '_' + key, np.array([v], np.int64))
                          for key, v in (('start', start), ('end', start + len(indices)),
                                         ('axis', 1))]
                node = helper.make_node('Slice', [node.input[0]] + bounds, list(node.output),
                                        name=node.name)
        elif (node.op_type == 'Concat' and len(node.input) == 1
              and node.output[0] not in view.outputs):
            rename[node.output[0]] = node.input[0]
            continue
        nodes.append(node)
    for node in nodes:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    del view.graph.node[:]
    view.graph.node.extend(nodes)


# --------------------------------------------------------------------------------- padding


def pad_channels(model, block=16):
    """Give every channel class a multiple of ``block`` channels by adding zero-weight channels.

    onnxruntime runs a depthwise conv in its blocked layout only when its channels are a multiple
    of the block (16 with AVX-512, 8 with AVX2), and a 1x1 conv only when its input channels are;
    otherwise it reorders the tensor to NCHW and back around a slow kernel. A channel added to a
    class gets zero weight rows (and bias) at the convs producing it, zero weight columns at the
    convs reading it, and neutral values in per-channel parameters, so it never reaches an output.
    Classes with any other border (a Concat, a Slice, a Shape, a graph output) are left as they
    are.
    """
    model = _copy(model)
    view = _Graph(model)
    padded = 0
    visited = set()
    for node in list(view.graph.node):
        if not _plain_conv(view, node) or node.output[0] in visited:
            continue
        channels = view.channels(node.output[0])
        members = _class_of(view, node.output[0])
        visited |= members
        if channels is None or channels % block == 0:
            continue
        plan = _plan_padding(view, members)
        if plan is None:
            continue
        extra = -channels % block
        for target, index, axis, fill in plan:
            value = view.constant(target.input[index])
            widths = [(0, 0)] * value.ndim
            widths[axis] = (0, extra)
            view.set_input_constant(target, index, np.pad(value, widths, constant_values=fill))
            if target.op_type == 'Conv' and view.attr(target, 'group', 1) == channels:
                next(a for a in target.attribute if a.name == 'group').i = channels + extra
        padded += 1
    _log.info('padded %d channel class(es) to a multiple of %d', padded, block)
    return _finish(model)


def _plan_padding(view, members):
    """``[(node, input index, axis, fill)]`` padding a class, or None when it cannot be padded."""
    plan, seen = [], set()
    for tensor in members:
        if tensor in view.outputs or tensor not in view.producer:
            return None
        borders = [(view.producer[tensor], 'out')] + [(r, 'in') for r in view.readers[tensor]]
        for node, side in borders:
            joined = _per_channel(view, node)
            if joined is not None and set(joined[0]) <= members:
                if id(node) not in seen:
                    seen.add(id(node))
                    plan.extend((node, index, axis, _neutral(node, index))
                                for index, axis in joined[1])
            elif _plain_conv(view, node) and side == 'out':
                plan.append((node, 1, 0, 0.0))
                if len(node.input) > 2 and node.input[2]:
                    plan.append((node, 2, 0, 0.0))
            elif _plain_conv(view, node) and node.input[0] == tensor:
                plan.append((node, 1, 1, 0.0))
            else:
                return None
    return plan


def _neutral(node, index):
    """A padding value for a per-channel parameter that keeps the added channels finite."""
    if node.op_type in ('Mul', 'Div') or (node.op_type == 'BatchNormalization' and index in (1, 4)):
        return 1.0  # a scale, a divisor or a variance
    return 0.0
