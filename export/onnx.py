"""Export a HybridBlock to ONNX: MXNet's converter, then small graph passes, then strict checks.

MXNet 1.9.1's ``mx.onnx.export_model`` builds an opset-13 graph but stamps onnx's newest opset and
lists every weight as a graph input (which stops onnxruntime from folding and fusing). The passes
in ``export.onnx_passes`` fix both and tidy the graph; each is a function ``ModelProto ->
ModelProto`` that leaves its argument untouched, and ``graph_passes`` lists them in order, so more
can be added. The passes that make the graph fast (channel shuffle as slices in ``export.shuffle``,
channel padding in ``export.channels``) are shared with the MXNet deployment graph.
"""
import collections
import dataclasses
import functools
import logging
import os
import tempfile

import mxnet as mx
import numpy as np

from nas.atomic import atomic_paths
from nas.errors import ExportError
from .channels import pad_channels
from .mxnet_symbol import trace
from .onnx_graph import first_line, import_onnx, opset_of, shape_of
from .onnx_passes import (collapse_reshapes, convert_opset, drop_initializer_inputs,
                          fold_constants, fuse_hard_sigmoid, fuse_hard_swish, make_batch_dynamic,
                          remove_identity, remove_unused)
from .shuffle import shuffle_passes

__all__ = ['SUPPORTED_OPSETS', 'ExportReport', 'export_onnx', 'onnx_model', 'check_opset',
           'graph_passes', 'fold_constants', 'ONNX_CHANNEL_BLOCK']

log = logging.getLogger(__name__)

SUPPORTED_OPSETS = range(11, 22)  # each run in onnxruntime 1.20 (newest: 21) by tests/test_onnx.py
# the padding nas-export writes and nas-quantize quantizes: onnxruntime's FP32 blocked layout
# needs it, and its int8 kernels run faster on it too (OneShot-S+ at 224, batch 1, 2 threads:
# INT8 2.54 ms padded to 16 vs 3.03 ms unpadded; 8: 2.58 ms, 32: 2.66 ms, 64: 2.97 ms)
ONNX_CHANNEL_BLOCK = 16


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
    import_onnx()  # fail before tracing when onnx is missing
    check_opset(opset)
    passes = graph_passes(opset, dynamic_batch, shuffle, channel_block)  # checks the options
    # first, so that an unwritable path fails fast
    with atomic_paths(path, error=ExportError) as (temp,):
        model = onnx_model(net, input_shape, passes, ctx)
        checks = _check(model)
        data = model.SerializeToString()
        with open(temp, 'wb') as handle:
            handle.write(data)
    graph = model.graph
    op_counts = dict(collections.Counter(node.op_type for node in graph.node))
    log.info('wrote %s: opset %d, %d nodes, %d bytes', path, opset, len(graph.node), len(data))
    return ExportReport(path=str(path), opset=opset, size_bytes=len(data),
                        inputs={v.name: shape_of(v) for v in graph.input},
                        outputs={v.name: shape_of(v) for v in graph.output},
                        node_count=len(graph.node), op_counts=op_counts, checks=checks)


def onnx_model(net, input_shape, passes, ctx=mx.cpu()):
    """The ModelProto of ``net`` after ``passes`` (``graph_passes``), unchecked and unwritten:
    the MXNet deployment graph (``export.deploy``) starts from it too."""
    sym, params = trace(net, input_shape, ctx)
    model = _convert(sym, params, input_shape)
    for graph_pass in passes:
        model = graph_pass(model)
    return model


def check_opset(opset):
    """Raise ExportError unless ``opset`` is one ``export_onnx`` can write."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError('opset %r is not supported; choose one of %d..%d (MXNet 1.9.1 translates '
                          'to opset 13, onnx converts from there)'
                          % (opset, SUPPORTED_OPSETS[0], SUPPORTED_OPSETS[-1]))


def graph_passes(opset, dynamic_batch=False, shuffle='slices', channel_block=None):
    """The post-processing applied by ``export_onnx``, in order."""
    passes = [drop_initializer_inputs, functools.partial(convert_opset, opset=opset)]
    if dynamic_batch:
        passes.append(make_batch_dynamic)
    passes += [remove_identity, fold_constants, collapse_reshapes, fuse_hard_sigmoid,
               fuse_hard_swish] + shuffle_passes(shuffle)
    if channel_block and channel_block > 1:
        passes.append(functools.partial(pad_channels, block=int(channel_block)))
    return passes + [remove_unused]


def _convert(sym, params, input_shape):
    """MXNet's own converter, unmodified: weights as graph inputs, newest opset stamped."""
    onnx = import_onnx()
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
    onnx = import_onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError('the exported graph is invalid at opset %d: %s'
                          % (opset_of(model), first_line(err))) from err
    return ('onnx.checker.check_model(full_check)', 'onnx.shape_inference(strict_mode)')
