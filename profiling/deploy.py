"""Networks written as they are deployed, the reference probe, and timing them.

What is timed is what the commands write: ``nas-export --onnx`` (BN merged, shuffle as slices,
channels padded to 16, fused hard-swish), ``nas-quantize --backend onnxruntime`` (that export's
INT8 QDQ graph, minmax calibration) and ``nas-export --mxnet`` (``export.deploy``'s graph). A
table entry is a block written this way between the two convolutions of ``Fed``, so its cost
includes what the export passes and the runtime's fusions make of it inside a network.
"""
import dataclasses
import os
import tempfile
import time

import numpy as np
from mxnet.gluon import nn

from export.merge_bn import merge_bn
from export.mxnet_symbol import INPUT_NAME
from export.onnx import ONNX_CHANNEL_BLOCK, export_onnx
from nas.errors import ProfilingError
from nas.network import OneShotNet
from zoo import get_model
from .timing import check_counts, check_runtime, measure_models, random_input

__all__ = ['PRECISIONS', 'PROBE_MODEL', 'PROBE_SIZE',
           'PROBE_SUBNETS', 'DISTURBED_SPREAD', 'RETIMES', 'MAX_PAUSE_S', 'check_target', 'Fed',
           'write_deployed', 'write_probe', 'subnets', 'measure_deployed', 'disturbed',
           'measure_probe']

PRECISIONS = ('fp32', 'int8')
PROBE_MODEL = 'oneshot_s_plus'
PROBE_SIZE = 224  # the probe's input size where the networks timed do not set it
PROBE_SUBNETS = 3  # measure_probe times the probe between this many whole subnets
DISTURBED_SPREAD = 0.15
RETIMES = 2  # a disturbed group is timed at most 3 times
MAX_PAUSE_S = 30.0  # before re-timing a group: as long as its last timing, at most this


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
    # as nas-quantize exports before quantizing
    export_onnx(merged, base + '-fp32.onnx', shape, channel_block=ONNX_CHANNEL_BLOCK)
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


def write_probe(runtime, folder, precision='fp32', size=PROBE_SIZE):
    """Write the reference probe for ``runtime`` and ``precision`` into ``folder`` as
    ``write_deployed`` writes a network; returns (model, shape).

    The probe is the zoo's OneShot-S+ at the networks' input ``size`` and precision (an INT8
    table's probe is INT8 as nas-quantize writes it): the same kernels, operator sizes, thread
    utilization and weight bytes as the subnets it stands for, so that what slows them slows it
    too (closely, not exactly). Measured here with 8 subnets at 224 px, each timed idle and
    under load, ratio of the two in probe units within 10 %: OneShot-S+ at 224 px 7/8 and 7/8
    under one busy loop, 7/8 and 8/8 under two duty-cycled loops; at 128 px (smaller
    operators, idler threads) 3/8, 3/8, 3/8 and 1/8; three 3x3 convolutions on 32 x 28 x 28
    did worse still. An FP32 probe once ran 1.9x slow while the INT8 subnets timed between its
    chunks ran 1.15x. Weights are default-initialized: latency does not depend on them."""
    net = get_model(PROBE_MODEL, input_size=size)
    shape = (1, 3, size, size)
    return write_deployed(net, shape, runtime, precision, os.path.join(folder, 'probe')), shape


def subnets(archs, shape):
    """``(net, shape)`` for each of ``archs``, default-initialized one at a time, as
    ``measure_deployed`` takes them: latency does not depend on the weights' values."""
    for arch in archs:
        net = OneShotNet(arch)
        net.initialize()
        yield net, shape


def measure_deployed(items, runtime, precision, threads, runs=20, warmup=5, chunks=4,
                     flush_bytes=0, group=10, on_result=None, probe_size=PROBE_SIZE,
                     probe_precision=None):
    """Write each ``(net, shape)`` of ``items`` deployed and time it, ``group`` at a time,
    interleaved with the probe (``timing.measure_models``) at ``probe_size`` px in
    ``probe_precision`` (default: ``precision``). ``items`` may be a generator: only one
    group's networks are needed at once.

    A group whose runs were disturbed (``disturbed``) is timed again after the other groups, up
    to ``RETIMES`` times, each time after a pause as long as its last timing (a co-tenant's
    burst lasts seconds to a minute), and its steadiest timing is kept; every Measurement says
    in ``timings`` how many times its group was timed. Returns the Measurements in order;
    ``on_result(index, measurement)`` as each group is settled (a re-timed group's later)."""
    check_target(runtime, precision)
    check_counts(runs, warmup, threads)
    settings = dict(runs=runs, warmup=warmup, chunks=chunks, flush_bytes=flush_bytes,
                    group=group)
    results = {}
    with tempfile.TemporaryDirectory(prefix='nas-deployed-') as folder:
        probe = write_probe(runtime, folder, probe_precision or precision, probe_size)

        def time_group(start, batch, attempts, pause):
            """Time ``batch`` once more after ``pause`` seconds; returns the arguments of its
            next timing while it is disturbed and re-timings remain, else settles it."""
            time.sleep(pause)
            began = time.perf_counter()
            attempts.append(measure_models(batch, runtime, threads, probe, **settings))
            if disturbed(attempts[-1]) and len(attempts) <= RETIMES:
                return start, batch, attempts, min(time.perf_counter() - began, MAX_PAUSE_S)
            kept = min(attempts, key=_group_spread)
            for index, result in enumerate(kept, start):
                results[index] = dataclasses.replace(result, timings=len(attempts))
                if on_result is not None:
                    on_result(index, results[index])
            return None

        pending, batch, count = [], [], 0
        for net, shape in items:
            base = os.path.join(folder, 'model%d' % count)
            batch.append((write_deployed(net, tuple(shape), runtime, precision, base), shape))
            count += 1
            if len(batch) == group:
                pending.append(time_group(count - len(batch), batch, [], 0))
                batch = []
        if batch:
            pending.append(time_group(count - len(batch), batch, [], 0))
        while any(pending):  # the disturbed groups, after all the others
            pending = [time_group(*entry) for entry in pending if entry]
    return [results[index] for index in range(count)]


def _group_spread(measurements):
    return float(np.median([m.timing.spread for m in measurements]))


def disturbed(measurements):
    """Whether a group's runs were disturbed: the median of its models' spreads (interquartile
    range over median) exceeds ``DISTURBED_SPREAD``. Steady groups of whole subnets spread
    0.02-0.08 on a shared 2-core machine; a co-tenant's burst spreads a group 0.2-0.7 (its
    medians 1.1-1.7x its minima). The probe chunks' spread is no sign: where the models' runs
    flush the caches (table entries), each chunk's first probe run is cold, and their spread
    reached 0.35-0.42 on a quiet machine."""
    return _group_spread(measurements) > DISTURBED_SPREAD


def measure_probe(archs, runtime, threads, precision='fp32', batch_size=1):
    """The probe's median time now (ms), timed between the whole subnets ``archs`` written as
    deployed, with ``measure_deployed``'s default runs, as the search's verification times its
    winners. A table's correction is fitted in units of the probe as read between whole
    calibration subnets, so the fresh reading is taken there too, in the same chunks. Timed
    alone, the 32-px probe read 0.67 ms at a search against 0.76-0.85 ms between the winners
    minutes later; in chunks of 2 samples between subnets it read 2.1 ms where the
    verification's chunks of 5 read 0.9-1.1 ms, one after the other."""
    size = archs[0].space.input_size
    found = measure_deployed(subnets(archs, (batch_size, 3, size, size)), runtime, precision,
                             threads, probe_size=size)
    return float(np.median([measurement.probe.median_ms for measurement in found]))
