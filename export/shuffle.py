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

Channel classes and their reordering live in ``export.channels``; the MXNet deployment graph
(``export.deploy``) runs these same passes.
"""
import dataclasses
import logging

import numpy as np

from nas.errors import ExportError
from .channels import pad_channels  # noqa: F401  (re-exported: nas-export's companion pass)
from .channels import axis1_gather, try_reorder
from .onnx_graph import GraphView, copy_model, finish

__all__ = ['SHUFFLE_FORMS', 'ShuffleSite', 'find_channel_shuffles', 'shuffle_to_gather',
           'gather_to_slices', 'shuffle_passes', 'pad_channels']

log = logging.getLogger(__name__)

SHUFFLE_FORMS = ('reshape', 'gather', 'slices')  # as traced; one Gather per half; permuted slices
_LAYOUT_OPS = ('Reshape', 'Transpose')


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


# ------------------------------------------------------------------------------- recognition


def find_channel_shuffles(model):
    """Every Reshape/Transpose chain that only permutes the channels of a 4-D tensor."""
    view = GraphView(model)
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
        log.debug('probe of %s failed: %s', source, err)
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
            log.info('replaced %d channel shuffle(s) by Gathers', count)
            return model
        if not copied:
            model, copied = copy_model(model), True
        model = _replace_sites(model, sites)
        count += len(sites)


def _replace_sites(model, sites):
    view = GraphView(model)
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
    return finish(model)


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
    model = copy_model(model)
    _sort_gathers(GraphView(model))
    while _expand_gathers(GraphView(model)):
        model = finish(model)
    model = finish(model)
    _sort_gathers(GraphView(model))
    _make_contiguous(GraphView(model))
    view = GraphView(model)
    _gathers_to_slices(view)
    return finish(model)


def _sort_gathers(view):
    for node in list(view.graph.node):
        if axis1_gather(view, node):
            indices = view.constant(node.input[1])
            try_reorder(view, node.output[0], np.argsort(indices, kind='stable'))


def _expand_gathers(view):
    """One sweep of step 2; True when something changed."""
    from onnx import helper
    changed = False
    nodes = []
    for node in view.graph.node:
        source = view.producer.get(node.input[0]) if node.input else None
        if axis1_gather(view, node) and source is not None and axis1_gather(view, source):
            inner = view.constant(source.input[1])
            view.set_input_constant(node, 1, inner[view.constant(node.input[1])])
            node.input[0] = source.input[0]
            changed = True
        elif (axis1_gather(view, node) and source is not None and source.op_type == 'Concat'
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
        gathers = [r for r in readers if axis1_gather(view, r) and r.input[0] == name]
        channels = view.channels(name)
        if not gathers or channels is None:
            continue
        order, seen = [], np.zeros(channels, bool)
        for gather in gathers:
            fresh = [i for i in sorted(view.constant(gather.input[1])) if not seen[i]]
            seen[fresh] = True
            order.extend(fresh)
        order.extend(np.flatnonzero(~seen))
        try_reorder(view, name, np.asarray(order, np.int64))


def _gathers_to_slices(view):
    """Step 4, and a Concat of one tensor -> that tensor."""
    from onnx import helper
    rename = {}
    nodes = []
    for node in view.graph.node:
        if axis1_gather(view, node):
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
