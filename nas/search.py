"""Random and genetic search over a trained supernet under constraints (SPEC §5).

The search itself only sees two callables, ``cost(arch) -> dict`` and ``evaluate(arch) -> top-1``,
so it is the same loop whatever measures accuracy or cost. Its state (population, every evaluated
candidate, RNG state) is written after each generation, so ``resume=True`` continues a killed run
and ends with the same result as an uninterrupted one.
"""
import logging
import os
import random
from dataclasses import dataclass, asdict
from typing import Callable, Dict, List, Optional

from .atomic import read_json, write_csv, write_json
from .errors import SearchError
from .constraints import Constraints, positive
from .space import Arch, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES, SearchSpace

__all__ = ['SearchConfig', 'Candidate', 'CandidateSampler', 'run_search',
           'pareto_front', 'rank_key', 'SPACE_MODES', 'FITNESS']

log = logging.getLogger(__name__)
SPACE_MODES = ('block', 'channel', 'joint')
FITNESS = ('acc', 'balanced_flop_acc')
STATE_FILE = 'search_state.json'
SUMMARY_FILE = 'search.json'


@dataclass(frozen=True)
class SearchConfig:
    """Search hyper-parameters (defaults: the reference genetic search, SPEC §5.2)."""
    strategy: str = 'genetic'
    space: str = 'joint'
    population: int = 50
    generations: int = 20
    elite: Optional[int] = None  # None: min(10, population)
    survive_prob: float = 0.1
    mutation_prob: float = 0.1
    top_k: int = 3
    random_iters: int = 100
    count_illegal: bool = True  # random search: an illegal draw uses up an iteration (SPEC §5.1)
    fitness: str = 'acc'        # or 'balanced_flop_acc': top-1 - balance_r * combined (§5.2)
    balance_r: float = 1.0
    seed: int = 0
    fixed_blocks: Optional[tuple] = None    # the frozen vector in 'channel' mode
    fixed_channels: Optional[tuple] = None  # the frozen vector in 'block' mode
    max_attempts: int = 2000

    def __post_init__(self):
        if self.strategy not in ('random', 'genetic'):
            raise SearchError("strategy must be 'random' or 'genetic', got %r" % self.strategy)
        if self.space not in SPACE_MODES:
            raise SearchError('search space mode must be one of %s, got %r'
                              % (', '.join(SPACE_MODES), self.space))
        if self.fitness not in FITNESS:
            raise SearchError('fitness must be one of %s, got %r'
                              % (', '.join(FITNESS), self.fitness))
        for name in ('population', 'generations', 'top_k', 'random_iters'):
            if getattr(self, name) < 1:
                raise SearchError('%s must be >= 1, got %r' % (name, getattr(self, name)))
        positive('balance_r', self.balance_r)
        if self.elite is None:  # the reference's 10, unless the population is smaller
            object.__setattr__(self, 'elite', min(10, self.population))
        if not 0 < self.elite <= self.population:
            raise SearchError('elite must be in 1..population (%d), got %d: lower elite or '
                              'raise population' % (self.population, self.elite))

    def fitness_of(self, top1, costs):
        """What the search maximises: top-1, or top-1 - r·combined (acc as a fraction)."""
        if self.fitness == 'acc':
            return top1
        return top1 - self.balance_r * costs['combined']


@dataclass
class Candidate:
    arch: str
    costs: Dict[str, float]
    top1: float
    generation: int
    order: int
    fitness: float


class CandidateSampler:
    """Draws legal architectures: uniform genes in the searched gene set(s), the others frozen,
    rejected until every constraint holds, with a bounded number of attempts."""

    def __init__(self, space: SearchSpace, config: SearchConfig, constraints: Constraints,
                 cost: Callable[[Arch], dict], rng: random.Random):
        self.space = space
        self.config = config
        self.constraints = constraints
        self.cost = cost
        self.rng = rng
        self._cost_cache = {}
        self.illegal = 0  # illegal draws so far (random draws and children)
        self.fixed_blocks = tuple(config.fixed_blocks or (0,) * NUM_POSITIONS)
        self.fixed_channels = tuple(config.fixed_channels or (NUM_SCALES - 1,) * NUM_POSITIONS)

    def costs_of(self, arch):
        """The cost dict of ``arch`` with its ``combined`` against the comparison model."""
        key = str(arch)
        if key not in self._cost_cache:
            costs = dict(self.cost(arch))
            costs['combined'] = self.constraints.combined(costs)
            self._cost_cache[key] = costs
        return self._cost_cache[key]

    def is_legal(self, arch):
        legal = not self.constraints.violations(self.costs_of(arch))
        self.illegal += not legal
        return legal

    def make(self, blocks, channels):
        if self.config.space == 'channel':
            blocks = self.fixed_blocks
        if self.config.space == 'block':
            channels = self.fixed_channels
        return Arch(tuple(blocks), tuple(channels), self.space)

    def random_arch(self):
        rng = self.rng
        return self.make([rng.randrange(NUM_BLOCKS) for _ in range(NUM_POSITIONS)],
                         [rng.randrange(NUM_SCALES) for _ in range(NUM_POSITIONS)])

    def sample_legal(self):
        for _ in range(self.config.max_attempts):
            arch = self.random_arch()
            if self.is_legal(arch):
                return arch
        raise SearchError('no architecture satisfying %s found in %d random draws; the '
                          'constraints are infeasible or too tight for this space'
                          % (self.constraints.describe(), self.config.max_attempts))

    def child(self, mother, father):
        """Uniform crossover of two parents, then per-gene mutation (SPEC §5.2)."""
        rng, p = self.rng, self.config.mutation_prob
        blocks = [rng.choice(pair) for pair in zip(mother.blocks, father.blocks)]
        channels = [rng.choice(pair) for pair in zip(mother.channels, father.channels)]
        blocks = [rng.randrange(NUM_BLOCKS) if rng.random() < p else b for b in blocks]
        channels = [rng.randrange(NUM_SCALES) if rng.random() < p else c for c in channels]
        return self.make(blocks, channels)


def _rng_state_to_json(rng):
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_state_from_json(rng, state):
    rng.setstate((state[0], tuple(state[1]), state[2]))


class _Run:
    """Book-keeping shared by both strategies: evaluation cache, history, state file."""

    def __init__(self, config, sampler, evaluate, out_dir, resume):
        self.config = config
        self.sampler = sampler
        self.evaluate = evaluate
        self.out_dir = out_dir
        self.history: List[Candidate] = []
        self._scores: Dict[str, float] = {}
        self.population: List[str] = []
        self.generation = 0
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, STATE_FILE)
        if resume and os.path.exists(path):
            self._load(path)
        elif os.path.exists(path) and not resume:
            raise SearchError('%s already holds a search; pass --resume to continue it or '
                              'choose another output directory' % out_dir)

    def _load(self, path):
        state = read_json(path, SearchError, 'search state',
                          'start the search again without --resume, in a new directory')
        if state.get('config') != _config_dict(self.config) or \
                state.get('constraints') != asdict(self.sampler.constraints):
            raise SearchError('the search in %s was started with other settings; resume with '
                              'the same options or use another output directory' % self.out_dir)
        self.history = [Candidate(**c) for c in state['history']]
        self._scores = {c.arch: c.fitness for c in self.history}
        self.population = state['population']
        self.generation = state['generation']
        self.sampler.illegal = state['illegal']
        _rng_state_from_json(self.sampler.rng, state['rng'])

    def save(self):
        state = {'config': _config_dict(self.config),
                 'constraints': asdict(self.sampler.constraints),
                 'generation': self.generation, 'population': self.population,
                 'illegal': self.sampler.illegal, 'rng': _rng_state_to_json(self.sampler.rng),
                 'history': [asdict(c) for c in self.history]}
        write_json(os.path.join(self.out_dir, STATE_FILE), state, error=SearchError, indent=1)

    def score(self, arch):
        """Fitness of ``arch``; each architecture is evaluated once per run."""
        key = str(arch)
        if key in self._scores:
            return self._scores[key]
        costs = self.sampler.costs_of(arch)
        assert not self.sampler.constraints.violations(costs), key
        top1 = float(self.evaluate(arch))
        fitness = self.config.fitness_of(top1, costs)
        self.history.append(Candidate(key, dict(costs), top1, self.generation,
                                      len(self.history), fitness))
        self._scores[key] = fitness
        return fitness


def _config_dict(config):
    data = asdict(config)
    for key in ('fixed_blocks', 'fixed_channels'):
        data[key] = list(data[key]) if data[key] is not None else None
    return data


def _random_search(run, progress):
    """``random_iters`` draws; an illegal one is skipped but counts as an iteration (SPEC §5.1)
    unless ``count_illegal`` is off, when each iteration draws until it finds a legal one."""
    sampler = run.sampler
    while run.generation < run.config.random_iters:
        if not run.config.count_illegal:
            run.score(sampler.sample_legal())
        else:
            arch = sampler.random_arch()
            if sampler.is_legal(arch):
                run.score(arch)
        run.generation += 1
        run.save()
        progress(1)
    if not run.history:
        raise SearchError('none of the %d random draws satisfied %s; loosen the limits or pass '
                          '--no-count-illegal to draw until a legal one is found'
                          % (run.config.random_iters, sampler.constraints.describe()))


def _genetic_search(run, progress):
    config, sampler, rng = run.config, run.sampler, run.sampler.rng
    if not run.population:
        while len(run.population) < config.population:
            arch = sampler.sample_legal()
            if str(arch) not in run.population:
                run.population.append(str(arch))
        run.save()
    space = sampler.space
    while run.generation < config.generations:
        ranked = sorted(run.population, key=lambda a: -run.score(Arch.parse(a, space)))
        parents = ranked[:config.elite] + [a for a in ranked[config.elite:]
                                           if rng.random() < config.survive_prob]
        population = list(parents)
        attempts = 0
        while len(population) < config.population:
            attempts += 1
            if len(parents) < 2 or attempts > config.max_attempts:
                arch = sampler.sample_legal()  # refill when breeding keeps producing illegal kids
            else:
                mother, father = rng.sample(parents, 2)
                arch = sampler.child(Arch.parse(mother, space), Arch.parse(father, space))
                if not sampler.is_legal(arch):
                    continue
            if str(arch) not in population:
                population.append(str(arch))
        run.population = population
        run.generation += 1
        for arch in population:  # evaluate the new generation before saving it
            run.score(Arch.parse(arch, space))
        run.save()
        progress(1)


def run_search(space, config, constraints, cost, evaluate, out_dir, resume=False,
               progress=None):
    """Run the configured search; returns the top-k candidates (best fitness first).

    ``cost(arch)`` returns a dict with at least ``flops`` and ``params`` (and ``latency_ms`` /
    ``micronet`` when those are constrained); ``evaluate(arch)`` returns top-1 in [0, 1].
    Writes ``search_state.json`` after each step, and ``candidates.csv``/``.json``,
    ``topk.json`` and ``search.json`` (the rule, the fitness, evaluated and illegal counts) at
    the end.
    """
    rng = random.Random(config.seed)
    sampler = CandidateSampler(space, config, constraints, cost, rng)
    run = _Run(config, sampler, evaluate, out_dir, resume)
    progress = progress or (lambda n: None)
    if config.strategy == 'random':
        _random_search(run, progress)
    else:
        _genetic_search(run, progress)
    top = sorted(run.history, key=rank_key)[:config.top_k]
    _write_results(run, top)
    return top


def _write_results(run, top):
    out_dir, history, constraints = run.out_dir, run.history, run.sampler.constraints
    keys = sorted({k for c in history for k in c.costs})
    write_csv(os.path.join(out_dir, 'candidates.csv'),
              ['order', 'generation', 'arch', 'top1', 'fitness'] + keys,
              [[c.order, c.generation, c.arch, '%.6f' % c.top1, '%.6f' % c.fitness]
               + [c.costs.get(k) for k in keys] for c in history], error=SearchError)
    for name, candidates in (('candidates.json', history), ('topk.json', top)):
        write_json(os.path.join(out_dir, name), [asdict(c) for c in candidates],
                   error=SearchError, indent=1)
    summary = {'rule': constraints.describe(), 'constraints': asdict(constraints),
               'fitness': run.config.fitness, 'balance_r': run.config.balance_r,
               'strategy': run.config.strategy, 'evaluated': len(history),
               'illegal_draws': run.sampler.illegal}
    if run.config.strategy == 'random':
        summary.update(iterations=run.config.random_iters,
                       count_illegal=run.config.count_illegal)
    log.info('%d candidates evaluated, %d illegal draws skipped (%s)', len(history),
             run.sampler.illegal, summary['rule'])
    write_json(os.path.join(out_dir, SUMMARY_FILE), summary, error=SearchError, indent=1)


def rank_key(candidate):
    """Best first: higher fitness, then (ties) fewer FLOPs, then the earlier evaluated."""
    return (-candidate.fitness, candidate.costs.get('flops', 0), candidate.order)


def pareto_front(candidates, cost_key):
    """Candidates not dominated in (higher top-1, lower cost), sorted by cost."""
    ordered = sorted(candidates, key=lambda c: (c.costs[cost_key], -c.top1))
    front, best = [], -1.0
    for cand in ordered:
        if cand.top1 > best:
            front.append(cand)
            best = cand.top1
    return front
