"""Networks written as they are deployed, the reference probe, and timing them.

What is timed is what the commands write: ``nas-export --onnx`` (BN merged, shuffle as slices,
channels padded to 16, fused hard-swish), ``nas-quantize --backend onnxruntime`` (that export's
INT8 QDQ graph, minmax calibration) and ``nas-export --mxnet`` (``export.deploy``'s graph). A
table entry is a block written this way between the two convolutions of ``Fed``, so its cost
includes what the export passes and the runtime's fusions make of it inside a network.
"""
import os
import tempfile

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from export.merge_bn import merge_bn
from export.mxnet_symbol import INPUT_NAME, export_mxnet
from export.onnx import export_onnx
from nas.errors import ProfilingError
from nas.network import OneShotNet
from .timing import check_counts, check_runtime, measure_models, random_input

__all__ = ['PRECISIONS', 'ONNX_CHANNEL_BLOCK', 'check_target', 'Fed', 'write_deployed',
           'write_probe', 'subnets', 'measure_deployed', 'measure_probe']

PRECISIONS = ('fp32', 'int8')
ONNX_CHANNEL_BLOCK = 16  # nas-export's default padding
_PROBE_SHAPE = (1, 32, 28, 28)


def check_target(runtime, precision):
    """Refuse a runtime/precision pair that no command deploys."""
    check_runtime(runtime)
    if precision not in PRECISIONS:
        raise ProfilingError('unknown precision %r; known: %s' % (precision, ', '.join(PRECISIONS)))
    if precision == 'int8' and runtime != 'onnxruntime':
        raise ProfilingError('INT8 latency is measured on onnxruntime (nas-quantize --backend '
                             'onnxruntime); use --runtime onnxruntime')


def write_deployed(net, shape, runtime, precision, base):
    """Write ``net`` at input ``shape`` as the command deploying it would; returns the ONNX path
    or MXNet prefix (``base`` plus a suffix)."""
    if runtime == 'mxnet':
        from export.deploy import export_deploy
        export_deploy(net, base, shape)
        return base
    merged = merge_bn(net, shape)
    if precision == 'fp32':
        export_onnx(merged, base + '.onnx', shape, channel_block=ONNX_CHANNEL_BLOCK)
        return base + '.onnx'
    from quantization.calib import ArrayReader
    from quantization.ort_int8 import quantize_ort
    export_onnx(merged, base + '-fp32.onnx', shape)  # as nas-quantize exports before quantizing
    quantize_ort(base + '-fp32.onnx', base + '-int8.onnx',
                 ArrayReader([random_input(shape, seed) for seed in range(2)], INPUT_NAME))
    return base + '-int8.onnx'


class Fed(nn.HybridBlock):
    """``block`` between two convolutions that a network would have around it, or those alone.

    Inside a network a block reads and feeds other blocks' convolutions, whose weights the export
    passes permute so that the channel shuffle becomes contiguous slices. Alone, its input and
    output are the graph's, whose channel order is fixed: the shuffle stays a Gather that no
    deployed network runs (and that the MXNet deployment graph cannot express). The cheapest
    such neighbours are 1x1 convolutions from and to one channel; a table entry is the fed
    block's time minus theirs alone, which also takes off the runtime's cost per call.
    """

    def __init__(self, channels, block=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.feed = nn.Conv2D(channels, 1, in_channels=1, use_bias=False)
            self.sink = nn.Conv2D(1, 1, use_bias=False)
        self.feed.initialize()
        self.sink.initialize()
        self.block = block

    def hybrid_forward(self, F, x):
        x = self.feed(x)
        return self.sink(x if self.block is None else self.block(x))


class _Probe(nn.HybridBlock):
    """Three 3x3 convolutions with ReLU on 32 x 28 x 28: a fraction of a millisecond, in the
    same kernels (convolution, activation, memory traffic) as the networks it stands for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = nn.HybridSequential()
        for _ in range(3):
            self.body.add(nn.Conv2D(32, 3, padding=1, in_channels=32), nn.Activation('relu'))

    def hybrid_forward(self, F, x):
        return self.body(x)


def write_probe(runtime, folder):
    """Write the reference probe for ``runtime`` into ``folder``; returns (model, shape). Its
    weights are fixed, so every probe anywhere is the same network."""
    probe = _Probe()
    probe.initialize()
    rng = np.random.RandomState(0)
    for param in probe.collect_params().values():
        param.set_data(mx.nd.array(rng.standard_normal(param.shape) * 0.1))
    base = os.path.join(folder, 'probe')
    if runtime == 'mxnet':
        export_mxnet(probe, base, _PROBE_SHAPE)
        return base, _PROBE_SHAPE
    export_onnx(probe, base + '.onnx', _PROBE_SHAPE)
    return base + '.onnx', _PROBE_SHAPE


def subnets(archs, shape):
    """``(net, shape)`` for each of ``archs``, default-initialized one at a time, as
    ``measure_deployed`` takes them: latency does not depend on the weights' values."""
    for arch in archs:
        net = OneShotNet(arch)
        net.initialize()
        yield net, shape


def measure_deployed(items, runtime, precision, threads, runs=20, warmup=5, chunks=4,
                     flush_bytes=0, group=10, on_result=None):
    """Write each ``(net, shape)`` of ``items`` deployed and time it, ``group`` at a time,
    interleaved with the probe (``timing.measure_models``). ``items`` may be a generator: only
    one group's networks are needed at once. Returns the Measurements in order;
    ``on_result(index, measurement)`` as each completes."""
    check_target(runtime, precision)
    check_counts(runs, warmup, threads)
    results = []
    with tempfile.TemporaryDirectory(prefix='nas-deployed-') as folder:
        probe = write_probe(runtime, folder)
        batch = []

        def flush():
            start = len(results)
            results.extend(measure_models(
                batch, runtime, threads, probe, runs=runs, warmup=warmup, chunks=chunks,
                flush_bytes=flush_bytes, group=group,
                on_result=None if on_result is None else
                lambda index, result: on_result(start + index, result)))
            batch.clear()
        for net, shape in items:
            base = os.path.join(folder, 'model%d' % len(batch))
            batch.append((write_deployed(net, tuple(shape), runtime, precision, base), shape))
            if len(batch) == group:
                flush()
        if batch:
            flush()
    return results


def measure_probe(runtime, threads, runs=200):
    """The probe's Timing now (``runs`` runs, about a second on a 2-core machine)."""
    check_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix='nas-probe-') as folder:
        probe = write_probe(runtime, folder)
        [result] = measure_models([probe], runtime, threads, probe, runs=runs, warmup=10,
                                  chunks=4)
    return result.timing
