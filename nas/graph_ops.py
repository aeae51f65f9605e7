"""The format-neutral op record that the tracers produce and the counting rules read.

``nas.trace_mxnet`` and ``nas.trace_onnx`` turn a network into ``GraphOp`` records with shapes;
``nas.counting`` (SPEC §6.1) and ``profiling.scores`` (SPEC §6.4) read only those records, so both
formats share every rule. The helpers below are the pieces both tracers need.
"""
import math
import numbers
from dataclasses import dataclass
from typing import Tuple

from .errors import ArchError, ProfilingError

__all__ = ['GraphOp', 'image_shape', 'shuffle_channels', 'weighted_op', 'computed_weight_error']


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


def image_shape(input_shape):
    """(C, H, W) or (N, C, H, W) -> (1, C, H, W): counts are per image (SPEC: batch 1)."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) not in (3, 4) or not all(
            isinstance(d, numbers.Integral) and d > 0 for d in shape):
        raise ArchError('input shape must be (C, H, W) or (N, C, H, W) positive ints, got %r'
                        % (input_shape,))
    return (1,) + shape[-3:]


def shuffle_channels(perm, in_shape):
    """C of a channel shuffle: a transpose swapping axes 1 and 2 of an (N, g, C/g, ...) view."""
    if len(in_shape) >= 4 and list(perm) == [0, 2, 1] + list(range(3, len(in_shape))):
        return in_shape[1] * in_shape[2]
    return 0


def weighted_op(name, op_type, kind, out_shape, inputs, weight, bias, **extra):
    """A conv/fc/bn op from its weight and bias shapes (None if absent)."""
    fan_in = math.prod(weight[1:]) if kind in ('conv', 'fc') else 0
    return GraphOp(name, op_type, kind, tuple(out_shape), tuple(inputs), fan_in=fan_in,
                   weight_params=math.prod(weight),
                   bias_params=math.prod(bias) if bias is not None else 0, **extra)


def computed_weight_error(op_type, name):
    """A conv/fc whose weight is computed in the graph has no stored size to count."""
    return ProfilingError('%s %s takes a computed weight; only stored weights can be counted'
                          % (op_type, name))

