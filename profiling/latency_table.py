"""Per-block latency lookup table and the latency predictor.

The table is indexed like the FLOPs lookup table (SPEC §6.2): ``input_block`` (stem),
``nas_block[position][block choice][channel choice]`` and ``output_block`` (tail, dropout,
classifier), in milliseconds, so a subnet's predicted latency is their sum. Each entry is one
block exported alone (an ONNX graph, or an MXNet symbol) and timed with the runtime, threads and
batch size of the table; before every timed run the caches are flushed by the bytes the rest of
a typical subnet reads (its parameters), and the runtime's fixed cost per call is subtracted from
every entry but the stem, so the sum counts it once, like one call of the whole network.
"""
import dataclasses
import functools
import json
import logging
import os
import tempfile

import numpy as np
from mxnet.gluon.block import HybridBlock

from export.mxnet_symbol import export_mxnet
from export.onnx import export_onnx
from nas.atomic import write_json
from nas.errors import ProfilingError
from nas.network import OneShotNet
from nas.space import Arch, SearchSpace, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES
from .timing import (check_counts, check_runtime, cpu_model, run_mxnet_jobs, runtime_version,
                     summarize, time_onnx)

__all__ = ['TABLE_KIND', 'table_entries', 'measure_latency_table', 'load_latency_table',
           'predict_latency', 'measure_latency', 'missing_entries']

_log = logging.getLogger(__name__)

TABLE_KIND = 'oneshot-nas latency table'
TABLE_VERSION = 1
_FLOAT_BYTES = 4


def table_entries(positions=None, blocks=None, channels=None):
    """(position, block, channel) triples of a table, all 20x4x10 unless restricted."""
    positions = range(NUM_POSITIONS) if positions is None else positions
    blocks = range(NUM_BLOCKS) if blocks is None else blocks
    channels = range(NUM_SCALES) if channels is None else channels
    for name, values, limit in (('position', positions, NUM_POSITIONS),
                                ('block', blocks, NUM_BLOCKS), ('channel', channels, NUM_SCALES)):
        bad = [v for v in values if not isinstance(v, int) or not 0 <= v < limit]
        if bad:
            raise ProfilingError('%s choice %r is out of range 0..%d' % (name, bad[0], limit - 1))
    return [(p, b, c) for p in positions for b in blocks for c in channels]


def missing_entries(table, entries=None):
    """Which of ``entries`` (default: all) the table has not measured yet."""
    nas_block = table['latency_ms']['nas_block']
    return [(p, b, c) for p, b, c in (entries or table_entries()) if nas_block[p][b][c] is None]


# --------------------------------------------------------------------------------------------
# measuring


class _Head(HybridBlock):
    """A network's head (everything after the last unit) as a block of its own."""

    def __init__(self, net, **kwargs):
        super().__init__(**kwargs)
        self.net = net

    def hybrid_forward(self, F, x):
        return self.net._head(F, x)


class _CallOverhead(HybridBlock):
    """The cheapest graph a runtime can run: its time is the runtime's fixed cost per call."""

    def hybrid_forward(self, F, x):
        return F.relu(x)


def measure_latency_table(space=None, runtime='onnxruntime', threads=2, batch_size=1, runs=20,
                          warmup=5, entries=None, path=None, resume=False, progress=None):
    """Measure (or complete) a latency table for ``space``; returns the table dict.

    Each entry is the median of ``runs`` timed runs after ``warmup`` untimed ones.

    ``entries`` limits the (position, block, channel) triples (default all 800); stem and head
    are always measured. With ``path`` the table is saved atomically after every entry; with
    ``resume`` an existing table there (same runtime, threads, batch, space and CPU) is completed
    instead of started afresh. ``progress.update(1)`` is called per measured entry.
    """
    space = space or SearchSpace()
    check_runtime(runtime)
    check_counts(runs, warmup, threads, batch_size)
    entries = list(entries) if entries is not None else table_entries()
    table = None
    if resume and path and os.path.exists(path):
        table = load_latency_table(path, runtime=runtime, threads=threads, space=space,
                                   batch_size=batch_size)
    if table is None:
        table = _new_table(space, runtime, threads, batch_size, runs, warmup)
    # grouped by (block, channel): one network per group provides its 20 positions
    todo = sorted(missing_entries(table, entries), key=lambda e: (e[1], e[2], e[0]))
    latency = table['latency_ms']
    parts = ([('input_block', None)] if latency['input_block'] is None else []) + \
        [(None, entry) for entry in todo] + \
        ([('output_block', None)] if latency['output_block'] is None else [])
    _log.info('measuring %d latency-table entries (%d already done)', len(parts),
              len(entries) - len(todo))
    if not parts:
        return table
    if progress is not None and hasattr(progress, 'reset'):  # tqdm: now the total is known
        progress.reset(total=len(parts))
    config = table['config']
    measure = _OnnxMeasurer if runtime == 'onnxruntime' else _MxnetMeasurer
    with tempfile.TemporaryDirectory(prefix='nas-latency-') as folder:
        measurer = measure(config, folder)
        if config.get('call_overhead_ms') is None:
            config['call_overhead_ms'] = measurer.time(_CallOverhead(), (batch_size, 1, 1, 1),
                                                       0).median_ms
        config['flush_bytes'] = config.get('flush_bytes') or _flush_bytes(space)
        blocks = _Blocks(space)

        def store(part, value):
            key, entry = part
            value = max(0.0, value - (config['call_overhead_ms'] if key != 'input_block' else 0))
            if key is not None:
                latency[key] = value
            else:
                p, b, c = entry
                latency['nas_block'][p][b][c] = value
            if path:
                write_json(path, table, error=ProfilingError, indent=2, sort_keys=True)
            if progress is not None:
                progress.update(1)
        measurer.run(parts, blocks, config['flush_bytes'], store)
    return table


def _new_table(space, runtime, threads, batch_size, runs, warmup):
    return {
        'kind': TABLE_KIND, 'version': TABLE_VERSION,
        'config': {'runtime': runtime, 'runtime_version': runtime_version(runtime),
                   'threads': threads, 'batch_size': batch_size, 'input_size': space.input_size,
                   'cpu': cpu_model(), 'space_key': space.key(), 'space': dataclasses.asdict(space),
                   'runs': runs, 'warmup': warmup, 'flush_bytes': None,
                   'call_overhead_ms': None},
        'latency_ms': {'input_block': None, 'output_block': None,
                       'nas_block': [[[None] * NUM_SCALES for _ in range(NUM_BLOCKS)]
                                     for _ in range(NUM_POSITIONS)]},
    }


class _Blocks:
    """The block of every table entry with its input shape. One network at a time is alive:
    the one repeating the current (block, channel) choice, which holds all 20 positions."""

    def __init__(self, space):
        self.space = space
        self.layout = space.position_layout()
        self._choice, self._net = None, None

    def net(self, block, channel):
        if self._choice != (block, channel):
            arch = Arch((block,) * NUM_POSITIONS, (channel,) * NUM_POSITIONS, self.space)
            self._net = OneShotNet(arch)
            self._net.initialize()
            self._choice = (block, channel)
        return self._net

    def get(self, key, entry):
        """(block, input shape without batch) of a part of the table."""
        size = self.space.input_size
        if key == 'input_block':
            return self.net(0, 0).stem, (3, size, size)
        if key == 'output_block':
            _, _, channels, _, height = self.layout[-1]  # the last unit keeps its input size
            return _Head(self.net(0, 0)), (channels, height, height)
        position, block, channel = entry
        _, cin, _, _, height = self.layout[position]
        return self.net(block, channel).units[position], (cin, height, height)


@functools.lru_cache(maxsize=None)
def _flush_bytes(space):
    """Parameter bytes of an average subnet: the mean over the 40 nets that repeat one
    (block, channel) choice everywhere equals the expectation over uniform random subnets."""
    counts = []
    for block in range(NUM_BLOCKS):
        for channel in range(NUM_SCALES):
            net = OneShotNet(Arch((block,) * NUM_POSITIONS, (channel,) * NUM_POSITIONS, space))
            counts.append(sum(int(np.prod(p.shape)) for p in net.collect_params().values()))
    return int(np.mean(counts)) * _FLOAT_BYTES


class _OnnxMeasurer:
    """Export each block to ONNX and time it in this process."""

    def __init__(self, config, folder):
        self.config = config
        self.path = os.path.join(folder, 'block.onnx')

    def time(self, block, shape, flush_bytes):
        export_onnx(block, self.path, shape)
        return time_onnx(self.path, shape, self.config['threads'], self.config['runs'],
                         self.config['warmup'], flush_bytes)

    def run(self, parts, blocks, flush_bytes, store):
        batch = self.config['batch_size']
        for part in parts:
            block, shape = blocks.get(*part)
            store(part, self.time(block, (batch,) + shape, flush_bytes).median_ms)


class _MxnetMeasurer:
    """Export each block as an MXNet symbol; one worker process times them all."""

    def __init__(self, config, folder):
        self.config = config
        self.folder = folder

    def _job(self, index, block, shape, flush_bytes):
        prefix = os.path.join(self.folder, 'block%s' % index)
        export_mxnet(block, prefix, shape)
        return dict(prefix=prefix, shape=list(shape), runs=self.config['runs'],
                    warmup=self.config['warmup'], flush_bytes=flush_bytes)

    def time(self, block, shape, flush_bytes):
        [result] = run_mxnet_jobs([self._job('_single', block, shape, flush_bytes)],
                                  self.config['threads'])
        return summarize(result['seconds'])

    def run(self, parts, blocks, flush_bytes, store):
        batch = self.config['batch_size']
        jobs = []
        for index, part in enumerate(parts):  # export all, keeping only one network alive
            block, shape = blocks.get(*part)
            jobs.append(self._job(index, block, (batch,) + shape, flush_bytes))
        run_mxnet_jobs(jobs, self.config['threads'], on_result=lambda i, result: store(
            parts[i], summarize(result['seconds']).median_ms))


def measure_latency(net, input_shape, runtime='onnxruntime', threads=2, runs=20, warmup=5):
    """End-to-end Timing of a whole network, measured the way table entries are (no flush:
    back-to-back calls of the network flush each block's weights by themselves)."""
    check_runtime(runtime)
    check_counts(runs, warmup, threads)
    config = dict(threads=threads, runs=runs, warmup=warmup, batch_size=input_shape[0])
    with tempfile.TemporaryDirectory(prefix='nas-latency-') as folder:
        measurer = (_OnnxMeasurer if runtime == 'onnxruntime' else _MxnetMeasurer)(config, folder)
        return measurer.time(net, tuple(input_shape), 0)


# --------------------------------------------------------------------------------------------
# loading and predicting


def load_latency_table(path, runtime=None, threads=None, input_size=None, batch_size=None,
                       space=None, allow_other_cpu=False):
    """Read a latency table; refuse one measured on another CPU or with other settings than
    the given ones (None: any)."""
    try:
        with open(path) as handle:
            table = json.load(handle)
    except OSError as err:
        raise ProfilingError('cannot read latency table %s: %s' % (path, err.strerror)) from err
    except ValueError as err:
        raise ProfilingError('%s is not a latency table (invalid JSON: %s)' % (path, err)) from err
    if not isinstance(table, dict) or table.get('kind') != TABLE_KIND:
        raise ProfilingError('%s is not a latency table; make one with nas-profile '
                             '--latency-table' % path)
    if table.get('version') != TABLE_VERSION:
        raise ProfilingError('latency table %s has version %r; this code reads version %d; '
                             'measure it again' % (path, table.get('version'), TABLE_VERSION))
    config = table['config']
    expected = {'runtime': runtime, 'threads': threads, 'input_size': input_size,
                'batch_size': batch_size, 'space_key': space.key() if space else None}
    if not allow_other_cpu:
        expected['cpu'] = cpu_model()
    for key, value in expected.items():
        if value is not None and config.get(key) != value:
            raise ProfilingError('latency table %s was measured with %s=%r, not %r; measure a '
                                 'table for this setting with nas-profile --latency-table'
                                 % (path, key, config.get(key), value))
    return table


def predict_latency(table, arch):
    """Predicted latency (ms) of ``arch``: stem + head + the entry of every position."""
    config = table['config']
    if config['space_key'] != arch.space.key():
        raise ProfilingError('the latency table was measured for search space %s; the '
                             'architecture is in %s' % (config['space_key'], arch.space.key()))
    latency = table['latency_ms']
    values = [latency['input_block'], latency['output_block']]
    for position, (block, channel) in enumerate(zip(arch.blocks, arch.channels)):
        value = latency['nas_block'][position][block][channel]
        if value is None:
            raise ProfilingError('the latency table has no entry for position %d, block %d, '
                                 'channel %d; complete it with nas-profile --latency-table '
                                 '--resume' % (position, block, channel))
        values.append(value)
    if None in values[:2]:
        raise ProfilingError('the latency table has no stem or head entry; complete it with '
                             'nas-profile --latency-table --resume')
    return float(sum(values))
