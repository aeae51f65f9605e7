"""Supernet and subnet training (SPEC §3): the entry points.

Called without a config, each trains with its SPEC recipe, whoever calls it: ``train_subnet``
with the subnet recipe (§3.2, ``subnet_recipe``), ``train_supernet`` and ``train`` with the
supernet recipe (§3.3, ``supernet_recipe``).

Run directory::

    checkpoints/ckpt-<step>/   net.params, optimizer.states, state.json (nas.checkpoint)
    metrics.jsonl, curve.png   one record per step and per epoch (nas.metrics_log)
    model.params + arch.json   (subnet)  |  supernet.params + space.json  (supernet)

The loop is ``nas.train_loop``; scale-out over devices and machines ``nas.distributed``; the
compute precision ``nas.precision``.
"""
import json
import os
from dataclasses import asdict

import numpy as np

from .atomic import save_params, write_text
from .checkpoint import latest_checkpoint
from .distributed import KVSTORES
from .errors import TrainingError
from .metrics_log import plot_curves, read_metrics
from .network import OneShotNet
from .sampler import UniformSampler, make_sampler
from .train_config import DTYPES, TrainConfig, TrainResult, subnet_recipe, supernet_recipe
from .train_loop import Run

__all__ = ['KVSTORES', 'DTYPES', 'TrainConfig', 'TrainResult', 'subnet_recipe',
           'supernet_recipe', 'train', 'train_subnet', 'train_supernet', 'training_sampler',
           'latest_checkpoint', 'read_metrics', 'plot_curves']


def train_subnet(arch, train_set, val_set, run_dir, config=None, ctx=None, kvstore='local',
                 resume=False, progress=False):
    """Train ``OneShotNet(arch)`` from scratch (``config`` None: ``subnet_recipe()``); writes
    ``model.params`` and ``arch.json``."""
    _check_classes(arch.space, train_set)
    net = OneShotNet(arch)
    result = train(net, train_set, val_set, run_dir, config or subnet_recipe(), ctx=ctx,
                   kvstore=kvstore, resume=resume, progress=progress, hybridize=True)
    if result.rank == 0:
        save_params(net, os.path.join(run_dir, 'model.params'), error=TrainingError)
        arch.save(os.path.join(run_dir, 'arch.json'))
    return result


def train_supernet(space, train_set, val_set, run_dir, config=None, sampler=None, ctx=None,
                   kvstore='local', resume=False, progress=False):
    """Train the supernet over ``space`` with ``sampler`` (uniform joint by default; ``config``
    None: ``supernet_recipe()``); writes ``supernet.params`` and ``space.json``."""
    _check_classes(space, train_set)
    config = config or supernet_recipe()
    net = OneShotNet(space=space)
    sampler = sampler or UniformSampler(space, seed=config.seed)
    result = train(net, train_set, val_set, run_dir, config, sampler=sampler, ctx=ctx,
                   kvstore=kvstore, resume=resume, progress=progress)
    if result.rank == 0:
        save_params(net, os.path.join(run_dir, 'supernet.params'), error=TrainingError)
        write_text(os.path.join(run_dir, 'space.json'), json.dumps(asdict(space)),
                   error=TrainingError)
    return result


def train(net, train_set, val_set, run_dir, config=None, sampler=None, ctx=None,
          kvstore='local', resume=False, progress=False, hybridize=False):
    """Train an uninitialised ``OneShotNet`` (a supernet needs ``sampler``) on ``train_set``,
    validating on ``val_set`` (may be None) after every epoch. Returns a ``TrainResult``."""
    if net.is_supernet and sampler is None:
        raise TrainingError('training a supernet needs a path sampler')
    run = Run(net, train_set, val_set, run_dir, config or supernet_recipe(), sampler, ctx,
              kvstore, progress)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return run.run(resume)


def training_sampler(kind, space, box, **options):
    """The supernet path sampler ``kind`` (``nas.sampler.make_sampler``) for the FLOPs/params
    ``box``; the constrained and strolling samplers cost paths with the space's lookup table
    (SPEC §6.2, built once and cached), and a box below the cheapest path is refused at once."""
    cost = None
    if kind != 'uniform':
        from .lookup_table import LookupTable  # here: building a table traces the network
        table = LookupTable.load_or_build(space)
        for what, floor, limit in zip(('FLOPs', 'params'), table.min_cost(),
                                      (box.max_flops, box.max_params)):
            if limit is not None and limit < floor:
                raise TrainingError('infeasible limits: the cheapest path of this search space '
                                    'has %d %s, above the limit %d' % (floor, what, limit))
        cost = table.cost
    return make_sampler(kind, space, cost=cost,
                        box=None if box.is_open and kind == 'strolling' else box, **options)


def _check_classes(space, dataset):
    if len(dataset) and int(np.max(dataset.labels)) >= space.classes:
        raise TrainingError('the dataset has labels up to %d but the network has %d classes; '
                            'build it with classes=%d' % (int(np.max(dataset.labels)),
                                                          space.classes, len(dataset.classes)))
