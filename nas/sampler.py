"""Path samplers of supernet training (SPEC §2.2, §3.3-3.5): one (block, channel) choice per batch.

Every draw of training step ``s`` comes from ``numpy.random.default_rng([seed, 0, s])``, so the
path of a step is a function of the seed, the step and (for strolling evolution) the parents
carried in ``state_dict()``: distributed workers built with the same seed train the same path at
every step, and a resumed run draws exactly the paths the uninterrupted run would have.

Modes: ``block`` samples blocks with all channels on (unless ``fixed_channels``), ``channel``
samples channels with ``fixed_blocks``, ``joint`` samples both. Channel indices always honour the
``ChannelSchedule`` of the epoch. ``cost(arch) -> (flops, params)`` (plain counts, e.g.
``LookupTable.cost``, SPEC §6.2) drives the constrained samplers; it is called for every
candidate, so keep it cheap.
"""
import logging
from dataclasses import dataclass

import numpy as np

from .errors import TrainingError
from .schedule import ChannelSchedule
from .space import Arch, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES

__all__ = ['MODES', 'SAMPLERS', 'CostBox', 'PathSampler', 'UniformSampler', 'ConstrainedSampler',
           'StrollingSampler', 'make_sampler']

log = logging.getLogger(__name__)

MODES = ('block', 'channel', 'joint')
_TRAIN, _VALIDATION = 0, 1  # rng streams


@dataclass(frozen=True)
class CostBox:
    """Inclusive FLOPs and params limits; None leaves a side open."""
    min_flops: float = None
    max_flops: float = None
    min_params: float = None
    max_params: float = None

    def __post_init__(self):
        for low, high, what in ((self.min_flops, self.max_flops, 'FLOPs'),
                                (self.min_params, self.max_params, 'params')):
            if low is not None and high is not None and low > high:
                raise TrainingError('%s limits are empty: min %g > max %g' % (what, low, high))

    @property
    def is_open(self):
        return all(v is None for v in (self.min_flops, self.max_flops, self.min_params,
                                       self.max_params))

    def contains(self, flops, params):
        return (_inside(flops, self.min_flops, self.max_flops)
                and _inside(params, self.min_params, self.max_params))

    def __str__(self):
        return 'FLOPs %s, params %s' % (_interval(self.min_flops, self.max_flops),
                                        _interval(self.min_params, self.max_params))


def _inside(value, low, high):
    return (low is None or value >= low) and (high is None or value <= high)


def _interval(low, high):
    def fmt(v, default):
        return default if v is None else '%.6gM' % (v / 1e6)
    return '[%s, %s]' % (fmt(low, '0'), fmt(high, 'inf'))


class PathSampler:
    """Base sampler: mode, fixed genes, warm-up schedule and the uniform draw of a path."""

    kind = 'base'

    def __init__(self, space, mode='joint', schedule=None, fixed_blocks=None, fixed_channels=None,
                 seed=0):
        if mode not in MODES:
            raise TrainingError('unknown sampling mode %r; use one of %s'
                                % (mode, ', '.join(MODES)))
        if mode == 'channel' and fixed_blocks is None:
            raise TrainingError('channel mode trains one block vector: give fixed_blocks '
                                '(--fixed-blocks, 20 digits 0-3)')
        self.space = space
        self.mode = mode
        self.schedule = schedule or ChannelSchedule(space.layout)
        check = Arch(tuple(fixed_blocks or (0,) * NUM_POSITIONS),
                     tuple(fixed_channels or (0,) * NUM_POSITIONS), space)
        self.fixed_blocks = check.blocks if fixed_blocks is not None else None
        self.fixed_channels = check.channels if fixed_channels is not None else None
        self.seed = int(seed)

    def channel_range(self, epoch):
        """Inclusive (lo, hi) channel indices a path of ``epoch`` may use."""
        if self.mode == 'block':
            return NUM_SCALES - 1, NUM_SCALES - 1
        return self.schedule.channel_range(epoch)

    def draw(self, rng, epoch):
        """A uniform random path of ``epoch`` honouring the mode and the warm-up."""
        if self.mode == 'channel':
            blocks = self.fixed_blocks
        else:
            blocks = tuple(int(b) for b in rng.integers(0, NUM_BLOCKS, NUM_POSITIONS))
        if self.mode == 'block' and self.fixed_channels is not None:
            channels = self.fixed_channels
        else:
            lo, hi = self.channel_range(epoch)
            channels = tuple(int(c) for c in rng.integers(lo, hi + 1, NUM_POSITIONS))
        return Arch(blocks, channels, self.space)

    def sample(self, step, epoch, batch=0, batches_per_epoch=1):
        """The path of training step ``step`` (batch ``batch`` of ``epoch``)."""
        raise NotImplementedError

    def validation_arch(self, epoch, index=0):
        """The ``index``-th unconstrained path validated after ``epoch`` (SPEC §3.4)."""
        return self.draw(np.random.default_rng([self.seed, _VALIDATION, epoch, index]), epoch)

    def state_dict(self):
        """JSON-serialisable state for checkpoints."""
        return {'kind': self.kind, 'mode': self.mode, 'seed': self.seed}

    def load_state_dict(self, state):
        mine = self.state_dict()
        for key in ('kind', 'mode', 'seed'):
            if state.get(key) != mine[key]:
                raise TrainingError('checkpoint sampler %s is %r but this run uses %r; resume '
                                    'with the options of the original run'
                                    % (key, state.get(key), mine[key]))

    def _rng(self, step):
        return np.random.default_rng([self.seed, _TRAIN, int(step)])


class UniformSampler(PathSampler):
    """Uniform single-path sampling (SPOS), stateless."""

    kind = 'uniform'

    def sample(self, step, epoch, batch=0, batches_per_epoch=1):
        return self.draw(self._rng(step), epoch)


class ConstrainedSampler(PathSampler):
    """Rejection sampling inside a FLOPs/params box (SPEC §3.5, random sampling).

    Candidates are drawn inline (the lookup-table cost takes microseconds), which keeps the path
    of a step deterministic; after ``max_attempts`` rejected draws it raises ``TrainingError``.
    """

    kind = 'constrained'

    def __init__(self, space, cost, box, max_attempts=1000, **kwargs):
        super().__init__(space, **kwargs)
        self.cost = cost
        self.box = box
        self.max_attempts = int(max_attempts)

    def sample(self, step, epoch, batch=0, batches_per_epoch=1):
        rng = self._rng(step)
        for _ in range(self.max_attempts):
            arch = self.draw(rng, epoch)
            if self.box.contains(*self.cost(arch)):
                return arch
        lo, hi = self.channel_range(epoch)
        raise TrainingError('no path inside %s in %d random draws at epoch %d (channel indices '
                            '%d-%d, %s mode); widen the limits or start the constrained run '
                            'after the channel warm-up' % (self.box, self.max_attempts, epoch,
                                                            lo, hi, self.mode))


class StrollingSampler(PathSampler):
    """Strolling evolution (SPEC §3.5): a walk of narrow FLOPs x params windows across the box,
    so that accepted paths cover it evenly. State: the current parents."""

    kind = 'strolling'

    def __init__(self, space, cost, box=None, children=10, parents=5, mutation=0.1,
                 ranks=(6, 6, 6, 9, 9, 6, 6, 6), slices=7, max_attempts=1000, **kwargs):
        super().__init__(space, **kwargs)
        box = box or CostBox(190e6, 330e6, 2.8e6, 5.0e6)  # SPEC §3.5 defaults (224, ImageNet)
        if None in (box.min_flops, box.max_flops, box.min_params, box.max_params):
            raise TrainingError('strolling evolution needs all four limits (min/max FLOPs and '
                                'params), got %s' % box)
        self.cost = cost
        self.box = box
        self.num_children, self.num_parents = int(children), int(parents)
        self.mutation = float(mutation)
        self.ranks = tuple(ranks)
        self.slices = int(slices)
        self.max_attempts = int(max_attempts)
        self.parents = []

    # -- the walk -------------------------------------------------------------------------------

    def window(self, subphase):
        """(flops_lo, flops_hi, params_lo, params_hi, maximise) of sub-phase 0..(2*slices*8 - 1)."""
        subs = len(self.ranks)
        phase, sub = divmod(subphase % (2 * self.slices * subs), subs)
        width = (self.box.max_flops - self.box.min_flops) / self.slices
        k = phase if phase < self.slices else 2 * self.slices - 1 - phase  # ping-pong
        upper = self.box.max_flops - k * width
        values = np.linspace(self.box.max_params, self.box.min_params, subs)
        value = values[sub if phase % 2 == 0 else subs - 1 - sub]
        maximise = (sub < subs // 2) == (phase % 2 == 0)
        if maximise:
            return upper - width, upper, self.box.min_params, value, True
        return upper - width, upper, value, self.box.max_params, False

    def sample(self, step, epoch, batch=0, batches_per_epoch=1):
        rng = self._rng(step)
        per_sub = max(1, batches_per_epoch // (2 * self.slices) // len(self.ranks))
        subphase = batch // per_sub  # restarts every epoch
        flo, fhi, plo, phi, maximise = self.window(subphase)
        if len(self.parents) < 2:
            self.parents = [self.draw(rng, epoch) for _ in range(self.num_parents)]
        children = self._breed(rng, epoch, (flo, fhi, plo, phi))
        if len(children) < self.num_children:
            children += self._random(rng, epoch, (flo, fhi, plo, phi),
                                     self.num_children - len(children))
        if not children:
            log.warning('strolling evolution: no path in window FLOPs [%.6gM, %.6gM] params '
                        '[%.6gM, %.6gM]; sampling from the whole box %s', flo / 1e6, fhi / 1e6,
                        plo / 1e6, phi / 1e6, self.box)
            whole = (self.box.min_flops, self.box.max_flops, self.box.min_params,
                     self.box.max_params)
            children = self._random(rng, epoch, whole, self.num_children)
        if not children:
            raise TrainingError('strolling evolution found no path inside %s in %d random draws '
                                'at epoch %d; widen the limits' % (self.box, self.max_attempts,
                                                                  epoch))
        children.sort(key=lambda c: c[2], reverse=maximise)
        pick = self.ranks[subphase % len(self.ranks)]
        self.parents = [arch for arch, _, _ in children[:self.num_parents]]
        if len(self.parents) < 2:  # crossover needs two parents; refill next step
            self.parents = []
        return children[min(pick, len(children) - 1)][0]

    def _fits(self, arch, window):
        flops, params = self.cost(arch)
        flo, fhi, plo, phi = window
        return (flo <= flops <= fhi and plo <= params <= phi), flops, params

    def _breed(self, rng, epoch, window):
        children = []
        for _ in range(self.max_attempts):
            if len(children) == self.num_children:
                break
            a, b = rng.choice(len(self.parents), 2, replace=False)
            child = self._mutate(self._crossover(self.parents[a], self.parents[b], rng), rng, epoch)
            fits, flops, params = self._fits(child, window)
            if fits:
                children.append((child, flops, params))
        return children

    def _random(self, rng, epoch, window, count):
        found = []
        for _ in range(self.max_attempts):
            if len(found) == count:
                break
            arch = self.draw(rng, epoch)
            fits, flops, params = self._fits(arch, window)
            if fits:
                found.append((arch, flops, params))
        return found

    def _crossover(self, a, b, rng):
        take_a = rng.random(2 * NUM_POSITIONS) < 0.5
        blocks = tuple(x if t else y for x, y, t in zip(a.blocks, b.blocks, take_a[:NUM_POSITIONS]))
        channels = tuple(x if t else y for x, y, t in zip(a.channels, b.channels,
                                                          take_a[NUM_POSITIONS:]))
        return Arch(blocks, channels, self.space)

    def _mutate(self, arch, rng, epoch):
        fresh = self.draw(rng, epoch)  # fixed genes stay fixed: draw() honours the mode
        flip = rng.random(2 * NUM_POSITIONS) < self.mutation
        blocks = tuple(n if f else o for o, n, f in zip(arch.blocks, fresh.blocks,
                                                       flip[:NUM_POSITIONS]))
        channels = tuple(n if f else o for o, n, f in zip(arch.channels, fresh.channels,
                                                         flip[NUM_POSITIONS:]))
        return Arch(blocks, channels, self.space)

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self):
        state = super().state_dict()
        state['parents'] = [str(arch) for arch in self.parents]
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.parents = [Arch.parse(text, self.space) for text in state.get('parents', [])]


SAMPLERS = {cls.kind: cls for cls in (UniformSampler, ConstrainedSampler, StrollingSampler)}


def make_sampler(kind, space, cost=None, box=None, **kwargs):
    """A sampler by name: ``uniform``, ``constrained`` (needs ``cost`` and ``box``) or
    ``strolling`` (needs ``cost``; ``box`` defaults to SPEC §3.5's)."""
    if kind not in SAMPLERS:
        raise TrainingError('unknown sampler %r; use one of %s' % (kind, ', '.join(SAMPLERS)))
    if kind == 'uniform':
        if box is not None and not box.is_open:
            raise TrainingError('FLOPs/params limits need the constrained or strolling sampler')
        return UniformSampler(space, **kwargs)
    if cost is None:
        raise TrainingError('the %s sampler needs a cost function (FLOPs, params of a path)'
                            % kind)
    if kind == 'constrained':
        if box is None or box.is_open:
            raise TrainingError('the constrained sampler needs FLOPs or params limits '
                                '(--max-flops / --max-params)')
        return ConstrainedSampler(space, cost, box, **kwargs)
    return StrollingSampler(space, cost, box, **kwargs)

