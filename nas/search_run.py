"""A search over a trained supernet run directory: load it, build the cost and accuracy
functions, run ``nas.search.run_search`` and plot the Pareto fronts."""
import json
import os
import time

import mxnet as mx

from .atomic import read_json
from .data import make_loader, open_dataset
from .errors import SearchError, WeightsError
from .evaluate import PathEvaluator
from .lookup_table import LookupTable
from .network import OneShotNet
from .params_io import load_params_checked
from .plots import plot_pareto
from .constraints import Constraints
from .search import SUMMARY_FILE, Candidate, SearchConfig, run_search
from .space import SearchSpace

__all__ = ['load_supernet', 'load_supernet_space', 'SearchData', 'search_supernet', 'make_cost']


def load_supernet_space(run_dir):
    """The search space recorded by ``nas-train supernet`` in ``run_dir/space.json``."""
    space_path = os.path.join(run_dir, 'space.json')
    if not os.path.isfile(space_path):
        raise SearchError('%s is not a supernet run directory: space.json is missing (train '
                          'one with nas-train supernet -o %s)' % (run_dir, run_dir))
    data = read_json(space_path, SearchError, 'search-space file')
    try:
        return SearchSpace(**data)
    except (ValueError, TypeError) as err:
        raise SearchError('%s is not a valid search-space file: %s' % (space_path, err)) from err


def load_supernet(run_dir, ctx=mx.cpu()):
    """The supernet of a ``nas-train supernet`` run directory (space.json + supernet.params)."""
    space = load_supernet_space(run_dir)
    params_path = os.path.join(run_dir, 'supernet.params')
    if not os.path.isfile(params_path):
        raise SearchError('%s holds no supernet.params; has its training finished?' % run_dir)
    supernet = OneShotNet(space=space)
    supernet.initialize(ctx=ctx)
    try:
        load_params_checked(supernet, params_path, ctx=ctx)
    except WeightsError as err:
        raise SearchError('the supernet checkpoint does not match its search space %s: %s'
                          % (space.key(), err)) from err
    return supernet


class SearchData:
    """Fixed recalibration batches (training images, eval transform) and validation batches."""

    def __init__(self, data, space, batch_size=64, recalib_batches=8, val_batches=None,
                 seed=0, ctx=mx.cpu()):
        size = space.input_size
        train_set = open_dataset(data, 'train', input_size=size, seed=seed)
        val_set = open_dataset(data, 'val', input_size=size, seed=seed)
        if len(train_set.classes) != space.classes:
            raise SearchError('the dataset has %d classes but the supernet was trained for %d'
                              % (len(train_set.classes), space.classes))
        recal = make_loader(train_set, batch_size, train=False, input_size=size, seed=seed)
        self.recal = [x.as_in_context(ctx) for x, _ in _take(recal, recalib_batches)]
        val = make_loader(val_set, batch_size, train=False, input_size=size, seed=seed)
        self.val = [(x.as_in_context(ctx), y) for x, y in _take(val, val_batches)]


def _take(loader, count):
    batches = []
    for batch in loader:
        if count is not None and len(batches) >= count:
            break
        batches.append(batch)
    return batches


def make_cost(space, latency=None, micronet=None, table=None):
    """``cost(arch) -> dict``: FLOPs/params from the lookup table, plus optional callables."""
    table = table or LookupTable.load_or_build(space)

    def cost(arch):
        flops, params = table.cost(arch)
        costs = {'flops': flops, 'params': params}
        if latency is not None:
            costs['latency_ms'] = latency(arch)
        if micronet is not None:
            costs['micronet'] = micronet(arch)
        return costs
    return cost, table


def _check_feasible(table, constraints, latency_floor=None):
    """Fail at once when even the cheapest architecture breaks a limit (SPEC §3.5: never hang).
    The combined floor pairs the least FLOPs with the least params: a bound no path beats."""
    min_flops, min_params = table.min_cost()
    floors = {'flops': min_flops, 'params': min_params, 'latency_ms': latency_floor,
              'combined': constraints.combined({'flops': min_flops, 'params': min_params})}
    for key, limit, name in constraints.checks():
        if floors.get(key) is not None and floors[key] > limit:
            raise SearchError('infeasible constraints: the smallest %s in this search space is '
                              '%s, above the %s limit %s'
                              % (key, _fmt(floors[key]), name, _fmt(limit)))


def _fmt(value):
    return '%.6gM' % (value / 1e6) if value >= 1e5 else '%.4g' % value


def search_supernet(run_dir, out_dir, config=SearchConfig(), constraints=Constraints(),
                    data='digits', batch_size=64, recalib_batches=8, val_batches=None,
                    latency=None, latency_floor=None, micronet=None, resume=False,
                    progress=None, ctx=mx.cpu()):
    """Search the supernet of ``run_dir``; writes candidates, top-k, state and Pareto plots to
    ``out_dir`` and returns ``(top_k, summary)``. ``progress(total_steps)``, if given, is called
    once the inputs are checked and returns the per-step ``update(n)`` callback."""
    supernet = load_supernet(run_dir, ctx)
    space = supernet.space
    cost, table = make_cost(space, latency, micronet)
    _check_feasible(table, constraints, latency_floor)
    batches = SearchData(data, space, batch_size, recalib_batches, val_batches,
                         seed=config.seed, ctx=ctx)
    evaluator = PathEvaluator(supernet, batches.recal, batches.val, ctx=ctx)
    steps = config.random_iters if config.strategy == 'random' else config.generations
    update = progress(steps) if progress else None  # only once every input has been checked
    start = time.time()
    top = run_search(space, config, constraints, cost, evaluator, out_dir, resume=resume,
                     progress=update)
    with open(os.path.join(out_dir, 'candidates.json')) as handle:
        history = [Candidate(**c) for c in json.load(handle)]
    with open(os.path.join(out_dir, SUMMARY_FILE)) as handle:
        recorded = json.load(handle)
    plot_pareto(history, os.path.join(out_dir, 'pareto.png'),
                cost_keys=('flops', 'params', 'combined', 'latency_ms'), title=config.strategy,
                boundaries=constraints.checks())
    summary = {'evaluated': len(history), 'illegal_draws': recorded['illegal_draws'],
               'rule': recorded['rule'], 'fitness': config.fitness,
               'seconds': time.time() - start, 'best': top[0].arch, 'best_top1': top[0].top1,
               'best_fitness': top[0].fitness, 'space': space.key()}
    return top, summary

