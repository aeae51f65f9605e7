"""FLOPs/params lookup table of a search space (SPEC §6.2): a candidate's cost is a table sum.

A position's cost depends only on its own (block, scale) choice, so the table is built by the
general counter (``nas.counting``) on 40 networks, one per uniform (block, scale) vector: each
traced op is charged to the stem, to the unit it sits in (by the unit's Gluon name prefix) or to
the output block. Tables are cached as JSON under ``$MXNET_HOME/oneshot_nas/lookup`` keyed by
``SearchSpace.key()``; the ``config`` section is checked on load.
"""
import logging
import os
import time

from .atomic import read_json, write_json
from .counting import count_ops
from .errors import ArchError
from .network import OneShotNet
from .space import (Arch, CHANNEL_SCALES, LAST_CONV_CHANNELS, NUM_BLOCKS, NUM_POSITIONS,
                    NUM_SCALES, STAGE_REPEATS, STEM_CHANNELS, SearchSpace)
from .trace_mxnet import trace_net

__all__ = ['LookupTable', 'default_cache_dir', 'cache_path']

log = logging.getLogger(__name__)
_MEASURES = ('flops', 'params')
_UNITS = {'count': 1, 'M': 10 ** 6}


def default_cache_dir():
    """``$MXNET_HOME/oneshot_nas/lookup`` (``~/.mxnet/oneshot_nas/lookup`` by default)."""
    home = os.environ.get('MXNET_HOME', os.path.join(os.path.expanduser('~'), '.mxnet'))
    return os.path.join(home, 'oneshot_nas', 'lookup')


def cache_path(space, cache_dir=None):
    """Where ``load_or_build`` keeps the table of ``space``."""
    directory = os.path.expanduser(cache_dir or default_cache_dir())
    return os.path.join(directory, 'lookup_table_%s.json' % space.key())


def _config(space):
    """The SPEC §6.2 ``config`` section of a space, plus ``classes`` (the head depends on it)."""
    return {'use_se': space.use_se, 'last_conv_after_pooling': space.last_conv_after_pooling,
            'channels_layout': space.layout, 'stage_repeats': list(STAGE_REPEATS),
            'stage_out_channels': list(space.stage_channels),
            'channel_scales': list(CHANNEL_SCALES), 'first_conv_out_channel': STEM_CHANNELS,
            'input_size': space.input_size, 'last_conv_out_channel': LAST_CONV_CHANNELS,
            'classes': space.classes}


def _space_of(config, path):
    """The SearchSpace a table's ``config`` describes; the reference layout has no ``classes``."""
    try:
        space = SearchSpace(use_se=config['use_se'],
                            last_conv_after_pooling=config['last_conv_after_pooling'],
                            layout=config['channels_layout'], input_size=config['input_size'],
                            classes=config.get('classes', 1000))
    except (KeyError, TypeError) as err:
        raise ArchError('lookup table %s has no valid config section (%s); delete it to rebuild'
                        % (path, err)) from err
    expected = _config(space)
    stale = sorted(k for k in expected if k in config and config[k] != expected[k])
    if stale:
        raise ArchError('lookup table %s was built for another space: %s differ from this '
                        'code (%s); delete it to rebuild'
                        % (path, ', '.join(stale), ', '.join('%s=%r' % (k, expected[k])
                                                             for k in stale)))
    return space


class LookupTable:
    """Exact integer FLOPs and params of the stem (``input_block``), every
    [position][block][scale] unit (``nas_block``) and the tail + classifier (``output_block``).

    ``flops`` and ``params`` are dicts with those three keys, as in the SPEC §6.2 JSON.
    """

    def __init__(self, space, flops, params):
        self.space = space
        self.flops = flops
        self.params = params
        for measure, table in zip(_MEASURES, (flops, params)):
            _check_table(measure, table)
        self._fixed = tuple(t['input_block'] + t['output_block'] for t in (flops, params))
        # rows[i][b * NUM_SCALES + c] = (flops, params): one list index per position in cost()
        self._rows = [[(flops['nas_block'][i][b][c], params['nas_block'][i][b][c])
                       for b in range(NUM_BLOCKS) for c in range(NUM_SCALES)]
                      for i in range(NUM_POSITIONS)]

    @classmethod
    def build(cls, space):
        """Count the 40 uniform-choice subnets of ``space`` and split their ops by position."""
        start = time.time()
        size = space.input_size
        tables = {m: {'nas_block': [[[None] * NUM_SCALES for _ in range(NUM_BLOCKS)]
                                    for _ in range(NUM_POSITIONS)]} for m in _MEASURES}
        for block in range(NUM_BLOCKS):
            for scale in range(NUM_SCALES):
                net = OneShotNet(Arch((block,) * NUM_POSITIONS, (scale,) * NUM_POSITIONS, space))
                parts = _split_by_part(net, trace_net(net, (3, size, size)))
                for measure in _MEASURES:
                    table = tables[measure]
                    for position in range(NUM_POSITIONS):
                        table['nas_block'][position][block][scale] = parts[position][measure]
                    for part in ('input_block', 'output_block'):
                        value = table.setdefault(part, parts[part][measure])
                        assert value == parts[part][measure], part  # choice-independent
        log.info('built the lookup table of %s in %.1f s', space.key(), time.time() - start)
        return cls(space, tables['flops'], tables['params'])

    @classmethod
    def load(cls, path, space=None):
        """Read a table (ours in counts, or the reference layout in millions); with ``space``,
        refuse a table built for another configuration."""
        data = read_json(path, ArchError, 'lookup table', 'delete it to rebuild')
        if not isinstance(data, dict) or not all(k in data for k in ('config',) + _MEASURES):
            raise ArchError('%s is not a lookup table: it needs config, flops and params '
                            'sections' % path)
        table_space = _space_of(data['config'], path)
        if space is not None and table_space != space:
            raise ArchError('lookup table %s is for the search space %s, not %s; pass the '
                            'matching space or rebuild the table'
                            % (path, table_space.key(), space.key()))
        unit = _UNITS.get(data.get('unit', 'M'))
        if unit is None:
            raise ArchError('lookup table %s has unit %r; expected one of %s'
                            % (path, data['unit'], ', '.join(_UNITS)))
        return cls(table_space, *(_scaled(data[m], unit, path) for m in _MEASURES))

    @classmethod
    def load_or_build(cls, space, cache_dir=None):
        """The cached table of ``space``, built and written atomically on first use."""
        path = cache_path(space, cache_dir)
        if os.path.exists(path):
            return cls.load(path, space)
        table = cls.build(space)
        table.save(path)
        return table

    def to_dict(self, millions=False):
        """The SPEC §6.2 JSON layout; ``millions=True`` writes values in M as the reference did."""
        def convert(value):
            return value / 1e6 if millions else value
        data = {'config': _config(self.space), 'unit': 'M' if millions else 'count'}
        for measure, table in zip(_MEASURES, (self.flops, self.params)):
            data[measure] = {
                'input_block': convert(table['input_block']),
                'nas_block': [[[convert(v) for v in row] for row in position]
                              for position in table['nas_block']],
                'output_block': convert(table['output_block'])}
        return data

    def save(self, path, millions=False):
        """Write the table atomically (a reader never sees half a file)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_json(path, self.to_dict(millions))

    def cost(self, arch):
        """(FLOPs, params) of ``arch``: stem + head + one table entry per position."""
        if arch.space != self.space:
            raise ArchError('architecture of search space %s costed with the lookup table of %s;'
                            ' use the table of its own space' % (arch.space.key(),
                                                                  self.space.key()))
        flops, params = self._fixed
        for row, block, scale in zip(self._rows, arch.blocks, arch.channels):
            entry_flops, entry_params = row[block * NUM_SCALES + scale]
            flops += entry_flops
            params += entry_params
        return flops, params

    def min_cost(self):
        """Lower bounds (FLOPs, params) over the space: each measure's per-position minimum
        (the two minima may come from different architectures)."""
        return tuple(fixed + sum(min(entry[k] for entry in row) for row in self._rows)
                     for k, fixed in enumerate(self._fixed))


def _split_by_part(net, ops):
    """Counts per part of a traced subnet: 'input_block', positions 0..19, 'output_block'."""
    prefixes = [('input_block', net.stem.prefix)] + [
        (position, unit.prefix) for position, unit in enumerate(net.units)]
    grouped = {part: [] for part, _ in prefixes}
    grouped['output_block'] = []  # tail, dropout, classifier, flatten
    for op in ops:
        part = next((p for p, prefix in prefixes if op.name.startswith(prefix)), 'output_block')
        grouped[part].append(op)
    counts = {part: count_ops(part_ops) for part, part_ops in grouped.items()}
    return {part: {'flops': c.flops, 'params': c.params} for part, c in counts.items()}


def _check_table(measure, table):
    nas_block = table.get('nas_block') if isinstance(table, dict) else None
    shape_ok = (isinstance(nas_block, list) and len(nas_block) == NUM_POSITIONS and all(
        isinstance(p, list) and len(p) == NUM_BLOCKS and all(
            isinstance(r, list) and len(r) == NUM_SCALES for r in p) for p in nas_block))
    if not shape_ok or not all(isinstance(table.get(k), int)
                               for k in ('input_block', 'output_block')):
        raise ArchError('%s table needs int input_block/output_block and a %dx%dx%d nas_block'
                        % (measure, NUM_POSITIONS, NUM_BLOCKS, NUM_SCALES))


def _scaled(table, unit, path):
    """A JSON table section as exact ints (millions in the reference layout: round back)."""
    try:
        def convert(value):
            return int(round(value * unit))
        return {'input_block': convert(table['input_block']),
                'nas_block': [[[convert(v) for v in row] for row in position]
                              for position in table['nas_block']],
                'output_block': convert(table['output_block'])}
    except (KeyError, TypeError) as err:
        raise ArchError('lookup table %s has a malformed section (%s); delete it to rebuild'
                        % (path, err)) from err
