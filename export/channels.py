"""Channel classes: tensors that must share one channel order, and the rewrites that change it.

A "channel class" is a set of tensors joined by per-channel ops (activations, depthwise convs,
pooling, SE's broadcast multiply, BatchNormalization). A class can be reordered when every node at
its border can absorb the permutation (``try_reorder``, used by ``export.shuffle`` to turn channel
Gathers into contiguous slices) and padded to a channel multiple when every border is a convolution
(``pad_channels``, for onnxruntime's blocked layout).
"""
import logging

import numpy as np

from .onnx_graph import GraphView, copy_model, finish

__all__ = ['axis1_gather', 'plain_conv', 'per_channel', 'class_of', 'try_reorder', 'pad_channels']

log = logging.getLogger(__name__)

_UNARY = {'Relu', 'HardSwish', 'HardSigmoid', 'Sigmoid', 'Tanh', 'LeakyRelu', 'Elu', 'Clip',
          'Identity', 'Dropout', 'GlobalAveragePool', 'GlobalMaxPool', 'AveragePool', 'MaxPool'}
_BINARY = {'Mul', 'Add', 'Sub', 'Div', 'Max', 'Min', 'Sum'}


def axis1_gather(view, node):
    return (node.op_type == 'Gather' and view.attr(node, 'axis', 0) in (1, -3)
            and view.constant(node.input[1]) is not None
            and view.constant(node.input[1]).ndim == 1)


def plain_conv(view, node):
    """A Conv whose input and output channel orders are both free (group 1, constant weights)."""
    return (node.op_type == 'Conv' and view.attr(node, 'group', 1) == 1
            and view.constant(node.input[1]) is not None
            and (len(node.input) < 3 or not node.input[2] or view.constant(node.input[2]) is not None))


def per_channel(view, node):
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


def class_of(view, name):
    """The tensors that must share ``name``'s channel order (joined by per-channel ops)."""
    members, stack = {name}, [name]
    while stack:
        current = stack.pop()
        nodes = list(view.readers[current])
        if current in view.producer:
            nodes.append(view.producer[current])
        for node in nodes:
            joined = per_channel(view, node)
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
        members = class_of(view, name)
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
        joined = per_channel(view, node)
        if joined is not None and set(joined[0]) <= members:
            if (id(node), 'params') not in self.done:
                self.done.add((id(node), 'params'))
                for index, axis in joined[1]:
                    self.actions.append((node, index, axis, q))
            return True
        if node.op_type == 'Shape':
            return True
        if plain_conv(view, node):
            if side == 'out':
                self.actions.append((node, 1, 0, q))
                if len(node.input) > 2 and node.input[2]:
                    self.actions.append((node, 2, 0, q))
                return True
            if node.input[0] == tensor and tensor not in node.input[1:]:
                self.actions.append((node, 1, 1, q))
                return True
            return False
        if axis1_gather(view, node):
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


def try_reorder(view, name, q):
    """Reorder the class of ``name`` by ``q`` if every border absorbs it; True when done."""
    if np.array_equal(q, np.arange(len(q))):
        return True
    reorder = _Reorder(view)
    if not reorder.plan(name, q):
        return False
    reorder.apply()
    return True


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
    model = copy_model(model)
    view = GraphView(model)
    padded = 0
    visited = set()
    for node in list(view.graph.node):
        if not plain_conv(view, node) or node.output[0] in visited:
            continue
        channels = view.channels(node.output[0])
        members = class_of(view, node.output[0])
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
    log.info('padded %d channel class(es) to a multiple of %d', padded, block)
    return finish(model)


def _plan_padding(view, members):
    """``[(node, input index, axis, fill)]`` padding a class, or None when it cannot be padded."""
    plan, seen = [], set()
    for tensor in members:
        if tensor in view.outputs or tensor not in view.producer:
            return None
        borders = [(view.producer[tensor], 'out')] + [(r, 'in') for r in view.readers[tensor]]
        for node, side in borders:
            joined = per_channel(view, node)
            if joined is not None and set(joined[0]) <= members:
                if id(node) not in seen:
                    seen.add(id(node))
                    plan.extend((node, index, axis, _neutral(node, index))
                                for index, axis in joined[1])
            elif plain_conv(view, node) and side == 'out':
                plan.append((node, 1, 0, 0.0))
                if len(node.input) > 2 and node.input[2]:
                    plan.append((node, 2, 0, 0.0))
            elif plain_conv(view, node) and node.input[0] == tensor:
                plan.append((node, 1, 1, 0.0))
            else:
                return None
    return plan


def _neutral(node, index):
    """A padding value for a per-channel parameter that keeps the added channels finite."""
    if node.op_type in ('Mul', 'Div') or (node.op_type == 'BatchNormalization' and index in (1, 4)):
        return 1.0  # a scale, a divisor or a variance
    return 0.0
