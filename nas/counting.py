"""FLOPs and params of any network by walking its computation graph (SPEC §6.1).

A tracer (``nas.trace_mxnet`` for Gluon HybridBlocks, ``nas.trace_onnx`` for ONNX models) turns
the network into ``GraphOp`` records; the rules here read only those records, so both formats
share them. There are no per-model formulas: any network built from the traced ops is counted,
and a new block needs no new code.
"""
from dataclasses import dataclass
from typing import Tuple

import mxnet as mx

from .errors import ArchError, ProfilingError
from .graph_ops import image_shape
from .trace_mxnet import trace_net
from .trace_onnx import trace_onnx

__all__ = ['LayerCount', 'CountReport', 'trace_model', 'count_ops', 'count_net', 'count_onnx',
           'count_model']


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


def trace_model(model, input_shape=None):
    """Trace a HybridBlock (``input_shape`` required) or an ONNX path / ModelProto."""
    if isinstance(model, mx.gluon.Block):
        if input_shape is None:
            raise ArchError('counting a network needs an input shape, e.g. (3, 224, 224)')
        return trace_net(model, input_shape)
    input_size = image_shape(input_shape)[2:] if input_shape is not None else None
    return trace_onnx(model, input_size)


def count_net(net, input_shape):
    """FLOPs/params (SPEC §6.1) of a Gluon HybridBlock for one image of ``input_shape``."""
    return count_ops(trace_net(net, input_shape))


def count_onnx(path_or_model, input_size=None):
    """FLOPs/params (SPEC §6.1) of an ONNX file or ModelProto; ``input_size`` sets dynamic H, W."""
    return count_ops(trace_onnx(path_or_model, input_size))


def count_model(model, input_shape=None):
    """``count_net`` for a HybridBlock, ``count_onnx`` for an ONNX path or ModelProto."""
    return count_ops(trace_model(model, input_shape))
