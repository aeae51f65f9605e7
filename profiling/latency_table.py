"""Per-block latency lookup table and the latency predictor.

The table is indexed like the FLOPs lookup table (SPEC §6.2): ``input_block`` (stem),
``nas_block[position][block choice][channel choice]`` and ``output_block`` (tail, dropout,
classifier). Each entry is one block written as the deployment command writes it
(``profiling.deploy``) between the two 1x1 convolutions of ``profiling.deploy.Fed``, so that its
channel shuffle is folded away as in a whole network, and timed with the table's runtime,
precision, threads and batch size, interleaved with the reference probe (OneShot-S+ at the
table's input size and precision: ``profiling.deploy.write_probe``); it is stored in
milliseconds and in probe units. Before every timed run the caches are flushed by
the bytes the rest of a typical subnet reads. The time of those two convolutions alone (which
includes the runtime's fixed cost per call) is subtracted from every block's entry and the cost
per call from the head's, so the sum counts it once, in the stem. A correction fitted on whole
calibration subnets (``profiling.correction``) covers what the sum still misses. A prediction
is the corrected sum in probe units times a probe time: the build's, or a fresh one
(``measure_probe``, between whole subnets as the correction was fitted) when the machine is
faster or slower now than when the table was built.
"""
import dataclasses
import functools
import logging
import math
import os
import time

import numpy as np
from mxnet.gluon.block import HybridBlock

from nas.atomic import read_json, write_json
from nas.errors import ProfilingError
from nas.network import OneShotNet
from nas.space import Arch, SearchSpace, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES
from .correction import apply_correction, fit_correction
from .deploy import Fed, check_target, measure_deployed, subnets
from .timing import WINDOW_S, check_counts, cpu_model, runtime_version

__all__ = ['TABLE_KIND', 'table_entries', 'measure_latency_table', 'load_latency_table',
           'predict_latency', 'predict_floor', 'missing_entries', 'calibration_archs']

log = logging.getLogger(__name__)

TABLE_KIND = 'oneshot-nas latency table'
# 3: blocks timed fed (profiling.deploy.Fed); 4: the probe is a network; 5: at the table's
# input size and precision
TABLE_VERSION = 5
_FLOAT_BYTES = 4
_CALIBRATION_SEED = 20260  # calibration subnets: never the benchmark's held-out ones
CALIBRATION_RUNS = 3  # x runs for calibration subnets: their noise enters every prediction
_CHECKED = ('runtime', 'precision', 'threads', 'batch_size', 'input_size', 'space_key')


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
    nas_block = table['latency_units']['nas_block']
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


def measure_latency_table(space=None, runtime='onnxruntime', precision='fp32', threads=2,
                          batch_size=1, runs=20, warmup=5, chunks=4, entries=None,
                          calibration=8, path=None, resume=False, progress=None):
    """Measure (or complete) a latency table for ``space``; returns the table dict.

    Each entry is the median of ``runs`` samples after ``warmup`` untimed runs, in ``chunks``
    interleaved with the probe. ``entries`` limits the (position, block, channel) triples
    (default all 800); stem and head are always measured. ``calibration`` whole subnets
    (0 or 3..10; drawn from the measured entries; timed ``CALIBRATION_RUNS`` x ``runs`` times)
    fit the correction. With ``path`` the table is saved atomically after every entry; with
    ``resume`` an existing table there (same setting, space and CPU) is completed instead of
    started afresh. ``progress.update(1)`` per entry.
    """
    space = space or SearchSpace()
    check_target(runtime, precision)
    check_counts(runs, warmup, threads, batch_size)
    check_counts(chunks, calibration)
    if calibration and not 3 <= calibration <= 10:
        raise ProfilingError('calibration subnets must be 0 or 3..10, got %d' % calibration)
    entries = list(entries) if entries is not None else table_entries()
    start = time.time()
    table = None
    if resume and path and os.path.exists(path):
        table = load_latency_table(path, runtime=runtime, precision=precision, threads=threads,
                                   space=space, batch_size=batch_size)
    if table is None:
        table = _new_table(space, runtime, precision, threads, batch_size, runs, warmup, chunks)
    config = table['config']
    settings = dict(runtime=runtime, precision=precision, threads=threads, runs=runs,
                    warmup=warmup, chunks=chunks, probe_size=space.input_size)

    def save():
        if path:
            write_json(path, table, error=ProfilingError, indent=2, sort_keys=True)
    if config['call_overhead_ms'] is None:
        [overhead] = measure_deployed([(_CallOverhead(), (batch_size, 1, 1, 1))],
                                      **dict(settings, precision='fp32',
                                             probe_precision=precision))
        config['call_overhead_ms'] = overhead.timing.median_ms
        config['call_overhead_units'] = overhead.units
    blocks = _Blocks(space)
    if config['feed_units'] is None:
        _measure_feeds(config, blocks, batch_size, settings)
    # grouped by (block, channel): one network per group provides its 20 positions
    todo = sorted(missing_entries(table, entries), key=lambda e: (e[1], e[2], e[0]))
    parts = [(key, None) for key in ('input_block',) if table['latency_units'][key] is None] + \
        [(None, entry) for entry in todo] + \
        [(key, None) for key in ('output_block',) if table['latency_units'][key] is None]
    log.info('measuring %d latency-table entries (%d already done)', len(parts),
              len(entries) - len(todo))
    if progress is not None and hasattr(progress, 'reset'):  # tqdm: now the total is known
        progress.reset(total=len(parts))

    def taken(key, entry, unit):  # beyond the block (see the module's note)
        if key is None:
            return config['feed_' + unit][entry[0]]
        return config['call_overhead_' + unit] if key == 'output_block' else 0.0

    def store(index, measurement):
        key, entry = parts[index]
        for unit, value in (('units', measurement.units), ('ms', measurement.timing.median_ms)):
            value = max(0.0, value - taken(key, entry, unit))
            if key is None:
                table['latency_' + unit]['nas_block'][entry[0]][entry[1]][entry[2]] = value
            else:
                table['latency_' + unit][key] = value
        config['probe']['samples_ms'].append(measurement.probe.median_ms)
        _update_probe(config['probe'])
        save()
        if progress is not None:
            progress.update(1)
    measure_deployed((blocks.get(key, entry, batch_size) for key, entry in parts),
                     flush_bytes=config['flush_bytes'], group=NUM_POSITIONS,
                     on_result=store, **settings)
    if calibration and (parts or table.get('correction') is None):
        table['correction'] = _calibrate(table, space, calibration, settings, batch_size)
    config['build_seconds'] += time.time() - start
    save()
    return table


def _new_table(space, runtime, precision, threads, batch_size, runs, warmup, chunks):
    def grid():
        return {'input_block': None, 'output_block': None,
                'nas_block': [[[None] * NUM_SCALES for _ in range(NUM_BLOCKS)]
                              for _ in range(NUM_POSITIONS)]}
    return {
        'kind': TABLE_KIND, 'version': TABLE_VERSION,
        'config': {'runtime': runtime, 'precision': precision,
                   'runtime_version': runtime_version(runtime), 'threads': threads,
                   'batch_size': batch_size, 'input_size': space.input_size, 'cpu': cpu_model(),
                   'space_key': space.key(), 'space': dataclasses.asdict(space), 'runs': runs,
                   'warmup': warmup, 'chunks': chunks, 'window_s': WINDOW_S,
                   'ort_spinning': False, 'flush_bytes': _flush_bytes(space),
                   'call_overhead_ms': None, 'call_overhead_units': None, 'feed_ms': None,
                   'feed_units': None, 'build_seconds': 0.0,
                   'probe': {'median_ms': None, 'spread': None, 'samples_ms': []}},
        'latency_ms': grid(), 'latency_units': grid(), 'correction': None,
    }


def _measure_feeds(config, blocks, batch_size, settings):
    """Time ``Fed``'s convolutions alone (cache flushed as for the entries), once per input
    shape of a position."""
    shapes = [blocks.shape(position, batch_size) for position in range(NUM_POSITIONS)]
    unique = sorted(set(shapes))
    feeds = measure_deployed([(Fed(shape[1]), (batch_size, 1) + shape[2:]) for shape in unique],
                             flush_bytes=config['flush_bytes'], group=NUM_POSITIONS, **settings)
    by_shape = dict(zip(unique, feeds))
    config['feed_ms'] = [by_shape[shape].timing.median_ms for shape in shapes]
    config['feed_units'] = [by_shape[shape].units for shape in shapes]


def _update_probe(probe):
    """The build's probe time (median over the entries' probe chunks) and its spread (the
    interquartile range over the median: how much the machine drifted during the build)."""
    samples = np.asarray(probe['samples_ms'])
    probe['median_ms'] = float(np.median(samples))
    q1, q3 = np.percentile(samples, [25, 75])
    probe['spread'] = float((q3 - q1) / probe['median_ms'])


def calibration_archs(table, count, seed=_CALIBRATION_SEED):
    """``count`` seeded random subnets that use only measured entries (None when a position
    has none)."""
    space = SearchSpace(**table['config']['space'])
    grid = table['latency_units']['nas_block']
    choices = [[(b, c) for b in range(NUM_BLOCKS) for c in range(NUM_SCALES)
                if grid[p][b][c] is not None] for p in range(NUM_POSITIONS)]
    if not all(choices):
        return None
    rng = np.random.RandomState(seed)
    picks = [[choices[p][rng.randint(len(choices[p]))] for p in range(NUM_POSITIONS)]
             for _ in range(count)]
    return [Arch(tuple(b for b, _ in pick), tuple(c for _, c in pick), space) for pick in picks]


def _calibrate(table, space, count, settings, batch_size):
    archs = calibration_archs(table, count)
    if archs is None:
        log.warning('no correction: the table has no entry at some position')
        return None
    shape = (batch_size, 3, space.input_size, space.input_size)
    measured = measure_deployed(subnets(archs, shape), group=count, **dict(
        settings, runs=settings['runs'] * CALIBRATION_RUNS))
    predicted = [predict_latency(table, arch, correct=False, units=True) for arch in archs]
    correction = fit_correction(predicted, [m.units for m in measured])
    correction['archs'] = [str(arch) for arch in archs]
    return correction


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

    def get(self, key, entry, batch_size):
        """(block, input shape) of a part of the table."""
        size = self.space.input_size
        if key == 'input_block':
            return self.net(0, 0).stem, (batch_size, 3, size, size)
        if key == 'output_block':
            _, _, channels, _, height = self.layout[-1]  # the last unit keeps its input size
            return _Head(self.net(0, 0)), (batch_size, channels, height, height)
        position, block, channel = entry
        shape = self.shape(position, batch_size)
        return (Fed(shape[1], self.net(block, channel).units[position]),
                (batch_size, 1) + shape[2:])

    def shape(self, position, batch_size):
        """The input shape of the unit at ``position``."""
        _, cin, _, _, height = self.layout[position]
        return batch_size, cin, height, height


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


# --------------------------------------------------------------------------------------------
# loading and predicting


def load_latency_table(path, runtime=None, precision=None, threads=None, input_size=None,
                       batch_size=None, space=None, allow_other_cpu=False):
    """Read and check a latency table; refuse one measured on another CPU, with another
    runtime version, or with other settings than the given ones (None: any)."""
    table = read_json(path, ProfilingError, 'latency table',
                      'measure it again with nas-profile --latency-table')
    if not isinstance(table, dict) or table.get('kind') != TABLE_KIND:
        raise ProfilingError('%s is not a latency table; make one with nas-profile '
                             '--latency-table' % path)
    if table.get('version') != TABLE_VERSION:
        raise ProfilingError('latency table %s has version %r; this code reads version %d; '
                             'measure it again' % (path, table.get('version'), TABLE_VERSION))
    _check_values(table, path)
    config = table['config']
    expected = {'runtime': runtime, 'precision': precision, 'threads': threads,
                'input_size': input_size, 'batch_size': batch_size,
                'space_key': space.key() if space else None,
                'runtime_version': runtime_version(config['runtime'])}
    if not allow_other_cpu:
        expected['cpu'] = cpu_model()
    for key, value in expected.items():
        if value is not None and config.get(key) != value:
            raise ProfilingError('latency table %s was measured with %s=%r, not %r; measure a '
                                 'table for this setting with nas-profile --latency-table'
                                 % (path, key, config.get(key), value))
    return table


def _check_values(table, path):
    """Hand-edited or truncated tables: every field present, every time None or >= 0."""
    try:
        config = table['config']
        for key in _CHECKED + ('runtime_version', 'cpu', 'space', 'call_overhead_units'):
            config[key]  # noqa: B018  (a KeyError names the missing field)
        probe = config['probe']['median_ms']
        grids = [table[name] for name in ('latency_ms', 'latency_units')]
        values = [(name, grid[name]) for grid in grids for name in ('input_block', 'output_block')]
        for grid in grids:
            if np.shape(grid['nas_block']) != (NUM_POSITIONS, NUM_BLOCKS, NUM_SCALES):
                raise KeyError('nas_block')
            values += [('position %d, block %d, channel %d' % (p, b, c), grid['nas_block'][p][b][c])
                       for p, b, c in table_entries()]
    except (KeyError, TypeError, ValueError) as err:
        raise ProfilingError('latency table %s is incomplete (%s missing); measure it again with '
                             'nas-profile --latency-table' % (path, err)) from None
    for name, value in values + [('the probe time', probe)]:
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                  or value < 0 or (name == 'the probe time' and value == 0)):
            raise ProfilingError('latency table %s has an invalid time for %s (%r); measure it '
                                 'again with nas-profile --latency-table --resume after removing '
                                 'it' % (path, name, value))


def _units_sum(table, arch, choose=None):
    config = table['config']
    if config['space_key'] != arch.space.key():
        raise ProfilingError('the latency table was measured for search space %s; the '
                             'architecture is in %s' % (config['space_key'], arch.space.key()))
    latency = table['latency_units']
    if latency['input_block'] is None or latency['output_block'] is None:
        raise ProfilingError('the latency table has no stem or head entry; complete it with '
                             'nas-profile --latency-table --resume')
    values = [latency['input_block'], latency['output_block']]
    for position, (block, channel) in enumerate(zip(arch.blocks, arch.channels)):
        value = latency['nas_block'][position][block][channel]
        if value is None:
            raise ProfilingError('the latency table has no entry for position %d, block %d, '
                                 'channel %d; complete it with nas-profile --latency-table '
                                 '--resume' % (position, block, channel))
        values.append(value)
    return float(sum(values))


def predict_latency(table, arch, probe_ms=None, correct=True, units=False):
    """Predicted latency (ms) of ``arch``: the table's sum in probe units, corrected
    (``correct``), times ``probe_ms`` (a fresh ``measure_probe`` time: rescaled to the
    machine's speed now) or the build's probe time. ``units=True``: in probe units."""
    total = _units_sum(table, arch)
    if correct:
        total = apply_correction(table.get('correction'), total)
    if units:
        return total
    return total * _probe_ms(table, probe_ms)


def predict_floor(table, space, probe_ms=None):
    """The lowest prediction of any subnet the table covers (the cheapest measured entry at
    every position; the correction is increasing, so its minimum is there)."""
    grid = table['latency_units']['nas_block']
    best = [min(((v, b, c) for b, row in enumerate(grid[p]) for c, v in enumerate(row)
                 if v is not None), default=None) for p in range(NUM_POSITIONS)]
    if None in best:
        raise ProfilingError('the latency table has no entry at position %d; complete it with '
                             'nas-profile --latency-table --resume' % best.index(None))
    arch = Arch(tuple(b for _, b, _ in best), tuple(c for _, _, c in best), space)
    return predict_latency(table, arch, probe_ms)


def _probe_ms(table, probe_ms):
    if probe_ms is None:
        return table['config']['probe']['median_ms']
    if not (isinstance(probe_ms, (int, float)) and math.isfinite(probe_ms) and probe_ms > 0):
        raise ProfilingError('the probe time must be a positive number of ms, got %r' % probe_ms)
    return float(probe_ms)
