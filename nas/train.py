"""Supernet and subnet training (SPEC §3): one resumable loop on one device, several devices, or
several machines through MXNet's parameter-server kvstore.

Determinism: the batches of epoch e are a function of (seed, e) (``nas.data`` loaders), the path
of step s of (seed, s) (``nas.sampler``) and the dropout masks of (seed, s, rank) (``mx.random`` is
reseeded every step because MXNet cannot save its generator). A checkpoint therefore holds the
weights, the optimizer momenta, the sampler state, the Python/NumPy RNG states and the counters,
and a resumed run repeats the uninterrupted one step for step.

Run directory::

    checkpoints/ckpt-<step>/   net.params, optimizer.params, state.json (temp dir + rename, last K)
    metrics.jsonl              one JSON object per step ("kind": "step") and per epoch ("epoch")
    curve.png                  loss per step, top-1 per epoch
    model.params + arch.json   (subnet)  |  supernet.params + space.json  (supernet)

Scale-out: each batch is split over the device list; gradients are summed through a kvstore
(``local``/``device`` on one machine, ``dist_sync``/``dist_device_sync`` across machines). Only
parameters the step's path touched are reduced and updated, every worker trains the same path per
step (it derives from (seed, step)) on its own shard (every num_workers-th image from its rank),
and BN running statistics are averaged over replicas before validation and checkpoints. In
distributed runs rank 0 writes the run directory; every worker reads it on ``resume``.
"""
import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, asdict, field
from typing import Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .atomic import save_params, write_text
from .bn_recal import recalibrate_bn
from .data import make_loader
from .errors import DataError, TrainingError
from .evaluate import topk_accuracy
from .network import OneShotNet, channel_mask
from .sampler import UniformSampler
from .schedule import learning_rate

__all__ = ['KVSTORES', 'TrainConfig', 'TrainResult', 'train', 'train_subnet', 'train_supernet',
           'smooth_labels', 'latest_checkpoint', 'read_metrics', 'plot_curves']

logger = logging.getLogger(__name__)

KVSTORES = ('local', 'device', 'dist_sync', 'dist_device_sync')
CHECKPOINTS = 'checkpoints'
METRICS = 'metrics.jsonl'
CURVE = 'curve.png'
_STATE, _WEIGHTS, _MOMENTA = 'state.json', 'net.params', 'optimizer.params'
_PLOT_EVERY_S = 60  # the curve is redrawn after an epoch at most this often, and at the end
_RESUMABLE_CHANGES = ('checkpoint_every', 'keep_checkpoints', 'data_workers')
_DMLC_ENV = ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
             'DMLC_NUM_WORKER')


@dataclass(frozen=True)
class TrainConfig:
    """Recipe and bookkeeping (defaults: the supernet script recipe, SPEC §3.3).

    ``batch_size`` is the batch of one worker, split over its devices; ``checkpoint_every`` adds
    a checkpoint every N steps to the one at each epoch end; ``val_paths`` random supernet paths
    are validated per epoch after BN recalibration on ``recal_images`` training images.
    """
    epochs: int = 120
    batch_size: int = 64
    lr: float = 0.65
    wd: float = 4e-5
    momentum: float = 0.9
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    data_workers: int = 0
    augment: Optional[str] = None
    val_paths: int = 1
    recal_images: int = 20000

    def __post_init__(self):
        for name in ('epochs', 'batch_size', 'keep_checkpoints', 'val_paths', 'recal_images'):
            if int(getattr(self, name)) < 1:
                raise TrainingError('%s must be >= 1, got %r' % (name, getattr(self, name)))
        for name in ('lr', 'wd', 'warmup_epochs', 'checkpoint_every', 'data_workers'):
            if getattr(self, name) < 0:
                raise TrainingError('%s must be >= 0, got %r' % (name, getattr(self, name)))
        if not 0 <= self.momentum < 1 or not 0 <= self.label_smoothing < 1:
            raise TrainingError('momentum and label smoothing must lie in [0, 1)')


@dataclass
class TrainResult:
    """What a finished run reports: per-epoch records (as in metrics.jsonl) and the totals."""
    run_dir: str
    epochs: list = field(default_factory=list)
    steps: int = 0
    val_top1: Optional[float] = None
    skipped_images: int = 0  # unreadable training images, skipped (see the log for each)
    rank: int = 0  # of this worker; only rank 0 writes the run directory


# ---------------------------------------------------------------------------------------------
# entry points

def train_subnet(arch, train_set, val_set, run_dir, config=TrainConfig(), ctx=None,
                 kvstore='local', resume=False, progress=False):
    """Train ``OneShotNet(arch)`` from scratch; writes ``model.params`` and ``arch.json``."""
    _check_classes(arch.space, train_set)
    net = OneShotNet(arch)
    result = train(net, train_set, val_set, run_dir, config, ctx=ctx, kvstore=kvstore,
                   resume=resume, progress=progress, hybridize=True)
    if result.rank == 0:
        save_params(net, os.path.join(run_dir, 'model.params'), error=TrainingError)
        arch.save(os.path.join(run_dir, 'arch.json'))
    return result


def train_supernet(space, train_set, val_set, run_dir, config=TrainConfig(), sampler=None,
                   ctx=None, kvstore='local', resume=False, progress=False):
    """Train the supernet over ``space`` with ``sampler`` (uniform joint by default); writes
    ``supernet.params`` and ``space.json``."""
    _check_classes(space, train_set)
    net = OneShotNet(space=space)
    sampler = sampler or UniformSampler(space, seed=config.seed)
    result = train(net, train_set, val_set, run_dir, config, sampler=sampler, ctx=ctx,
                   kvstore=kvstore, resume=resume, progress=progress)
    if result.rank == 0:
        save_params(net, os.path.join(run_dir, 'supernet.params'), error=TrainingError)
        write_text(os.path.join(run_dir, 'space.json'), json.dumps(asdict(space)),
                   error=TrainingError)
    return result


def train(net, train_set, val_set, run_dir, config=TrainConfig(), sampler=None, ctx=None,
          kvstore='local', resume=False, progress=False, hybridize=False):
    """Train an uninitialised ``OneShotNet`` (a supernet needs ``sampler``) on ``train_set``,
    validating on ``val_set`` (may be None) after every epoch. Returns a ``TrainResult``."""
    if net.is_supernet and sampler is None:
        raise TrainingError('training a supernet needs a path sampler')
    run = _Run(net, train_set, val_set, run_dir, config, sampler, ctx, kvstore, progress)
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return run.run(resume)


def _check_classes(space, dataset):
    if len(dataset) and int(np.max(dataset.labels)) >= space.classes:
        raise TrainingError('the dataset has labels up to %d but the network has %d classes; '
                            'build it with classes=%d' % (int(np.max(dataset.labels)),
                                                          space.classes, len(dataset.classes)))


# ---------------------------------------------------------------------------------------------
# the loop

class _Run:
    def __init__(self, net, train_set, val_set, run_dir, config, sampler, ctx, kvstore, progress):
        self.net, self.config, self.sampler = net, config, sampler
        self.run_dir = os.fspath(run_dir)
        self.ctx = list(ctx) if ctx else [mx.cpu()]
        self.progress = progress
        self.kv, self.rank, self.num_workers = _create_kvstore(kvstore, len(self.ctx))
        self.chief = self.rank == 0
        self.space = net.space
        size = self.space.input_size
        self.train_set = train_set
        shard = _shard(train_set, self.rank, self.num_workers)
        self.train_loader = make_loader(shard, config.batch_size, train=True, input_size=size,
                                        augment=config.augment, seed=config.seed,
                                        num_workers=config.data_workers)
        self.batches = len(self.train_loader)
        if self.batches == 0:
            raise DataError('the training data has %d images per worker, fewer than one batch of '
                            '%d; lower --batch-size' % (len(shard), config.batch_size))
        self.val_loader = None
        if val_set is not None and len(val_set):
            self.val_loader = make_loader(val_set, config.batch_size, train=False,
                                          input_size=size, num_workers=config.data_workers)
        self.recal_loader = None
        if net.is_supernet:
            self.recal_loader = make_loader(train_set, config.batch_size, train=False,
                                            input_size=size, num_workers=config.data_workers)
        self.total_steps = config.epochs * self.batches
        self.warmup_steps = min(int(round(config.warmup_epochs * self.batches)), self.total_steps)

        mx.random.seed(config.seed)
        net.initialize(ctx=self.ctx)
        named = net._collect_params_with_prefix()
        self.trainable = [(n, p) for n, p in named.items() if p.grad_req != 'null']
        self.aux = [(n, p) for n, p in named.items() if p.grad_req == 'null']
        for name, param in self.trainable:
            if name.endswith(('gamma', 'beta', 'bias')):  # SPEC §3.1 no-wd
                param.wd_mult = 0.0
        self.optimizer = mx.optimizer.NAG(
            momentum=config.momentum, wd=config.wd, learning_rate=config.lr,
            param_dict={i: p for i, (_, p) in enumerate(self.trainable)})
        self.updaters = [mx.optimizer.get_updater(self.optimizer) for _ in self.ctx]
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        self.metrics = _MetricsLog(os.path.join(self.run_dir, METRICS), self.chief)

    # -- setup and checkpoints ------------------------------------------------------------------

    def run(self, resume):
        _prepare_run_dir(self.run_dir, resume=resume, chief=self.chief)
        position = self._restore() if resume else None
        if position is None:
            position = {'epoch': 0, 'batch': 0, 'step': 0, 'sums': [0.0, 0.0, 0]}
        self.metrics.open(position if resume else None)
        self._init_kvstore()
        result = TrainResult(self.run_dir)
        self._plotted = time.time()
        result.epochs = self.metrics.epochs()
        epoch, batch, step, sums = (position['epoch'], position['batch'], position['step'],
                                    position['sums'])
        while epoch < self.config.epochs:
            step, sums = self._train_epoch(epoch, batch, step, sums)
            record = self._end_epoch(epoch, step, sums)
            result.epochs.append(record)
            epoch, batch, sums = epoch + 1, 0, [0.0, 0.0, 0]
            self._checkpoint(epoch, 0, step, sums, synced=True)
            last = epoch == self.config.epochs
            if self.chief and (last or time.time() - self._plotted > _PLOT_EVERY_S):
                plot_curves(self.metrics.path, os.path.join(self.run_dir, CURVE))
                self._plotted = time.time()
        result.steps = step
        result.val_top1 = result.epochs[-1].get('val_top1') if result.epochs else None
        result.skipped_images = self.train_set.skipped
        result.rank = self.rank
        return result

    def _state(self, epoch, batch, step, sums):
        py_version, py_state, py_gauss = random.getstate()
        np_state = np.random.get_state()
        return {'version': 1, 'epoch': epoch, 'batch': batch, 'step': step, 'sums': list(sums),
                'config': asdict(self.config), 'net': _describe(self.net),
                'num_workers': self.num_workers,
                'sampler': self.sampler.state_dict() if self.sampler else None,
                'python_random': [py_version, list(py_state), py_gauss],
                'numpy_random': [np_state[0], np_state[1].tolist()] + list(np_state[2:])}

    def _checkpoint(self, epoch, batch, step, sums, synced=False):
        if not synced:
            self._sync_running_stats()
        if not self.chief:
            return
        if not _all_finite(p for _, p in self.trainable):
            raise TrainingError('weights became non-finite at step %d; not checkpointing them. '
                                'The last good checkpoint is %s; lower --lr'
                                % (step, latest_checkpoint(self.run_dir)))
        momenta = {}
        for i, (name, _) in enumerate(self.trainable):
            state = self.updaters[0].states.get(i)
            if state is not None:
                momenta[name] = state
        _write_checkpoint(self.run_dir, step, self.config.keep_checkpoints, {
            _WEIGHTS: self.net.save_parameters,
            _MOMENTA: lambda path: mx.nd.save(path, momenta),
            _STATE: lambda path: _dump_json(path, self._state(epoch, batch, step, sums))})

    def _restore(self):
        path = latest_checkpoint(self.run_dir)
        if path is None:
            logger.info('no checkpoint in %s; starting from scratch', self.run_dir)
            return None
        try:
            with open(os.path.join(path, _STATE)) as handle:
                state = json.load(handle)
        except (OSError, ValueError) as err:
            raise TrainingError('checkpoint %s is unreadable (%s); delete it to resume from the '
                                'one before' % (path, err)) from None
        self._check_compatible(state, path)
        try:
            self.net.load_parameters(os.path.join(path, _WEIGHTS), ctx=self.ctx)
            momenta = mx.nd.load(os.path.join(path, _MOMENTA)) or {}  # {} is saved as []
        except (mx.base.MXNetError, AssertionError, OSError, ValueError) as err:
            raise TrainingError('checkpoint %s is unreadable or does not fit this network (%s); '
                                'delete it to resume from the one before'
                                % (path, str(err).strip().splitlines()[0][:200])) from None
        index = {name: i for i, (name, _) in enumerate(self.trainable)}
        for name, value in momenta.items():
            for updater, ctx in zip(self.updaters, self.ctx):
                updater.states[index[name]] = value.as_in_context(ctx)
                updater.states_synced[index[name]] = True
        if self.sampler is not None:
            self.sampler.load_state_dict(state['sampler'])
        version, py_state, gauss = state['python_random']
        random.setstate((version, tuple(py_state), gauss))
        name, keys, pos, has_gauss, cached = state['numpy_random']
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        logger.info('resuming from %s (epoch %d, batch %d, step %d)', path, state['epoch'],
                    state['batch'], state['step'])
        return state

    def _check_compatible(self, state, path):
        mine = asdict(self.config)
        diffs = ['%s %r (checkpoint) vs %r' % (k, v, mine.get(k))
                 for k, v in state['config'].items()
                 if k not in _RESUMABLE_CHANGES and mine.get(k) != v]
        if state['net'] != _describe(self.net):
            diffs.append('network %s (checkpoint) vs %s' % (state['net'], _describe(self.net)))
        if state['num_workers'] != self.num_workers:
            diffs.append('%d workers (checkpoint) vs %d' % (state['num_workers'],
                                                            self.num_workers))
        if diffs:
            raise TrainingError('cannot resume from %s: it was written with other options (%s); '
                                'resume with the original options or use a new run directory'
                                % (path, '; '.join(diffs)))

    # -- distributed plumbing -------------------------------------------------------------------

    def _init_kvstore(self):
        """Register every parameter (and a loss slot); all replicas start from rank 0's."""
        if self.kv is None:
            return
        for key, (_, param) in enumerate(self.trainable + self.aux):
            self.kv.init(key, param.data(self.ctx[0]))
            self.kv.pull(key, out=param.list_data(), priority=-key)
        self._stats_key = len(self.trainable) + len(self.aux)
        self.kv.init(self._stats_key, mx.nd.zeros(3))
        mx.nd.waitall()

    def _sync_running_stats(self):
        """Average BN running statistics over devices and workers (they see different images)."""
        if self.kv is None:
            return
        replicas = len(self.ctx) * self.num_workers
        for offset, (_, param) in enumerate(self.aux):
            arrays = param.list_data()
            self.kv.pushpull(len(self.trainable) + offset, arrays, priority=-offset)
            for array in arrays:
                array /= replicas
        mx.nd.waitall()

    def _global_sums(self, loss_sum, correct, images):
        if self.kv is None or self.num_workers == 1:
            return loss_sum, correct, images
        stats = mx.nd.array([loss_sum, correct, images])
        self.kv.pushpull(self._stats_key, stats)
        loss_sum, correct, images = stats.asnumpy().tolist()
        return loss_sum, correct, int(images)

    # -- one epoch ------------------------------------------------------------------------------

    def _train_epoch(self, epoch, start_batch, step, sums):
        from tqdm import tqdm
        self.train_loader.epoch = epoch
        bar = tqdm(total=self.batches, initial=start_batch, file=sys.stderr, leave=False,
                   desc='epoch %d/%d' % (epoch + 1, self.config.epochs),
                   disable=not (self.progress and self.chief))
        self._epoch_started = time.time()
        tick = time.time()
        try:
            for batch, (data, label) in enumerate(self.train_loader):
                if batch < start_batch:  # consumed before the checkpoint we resumed from
                    continue
                lr, arch, loss_sum, correct = self._step(data, label, step, epoch, batch)
                loss_sum, correct, images = self._global_sums(loss_sum, correct, data.shape[0])
                if not math.isfinite(loss_sum):
                    raise TrainingError(
                        'loss became %s at epoch %d, step %d (lr %.4g); training stopped before '
                        'updating the weights. The last good checkpoint is %s; lower --lr or check '
                        'the data' % (loss_sum, epoch, step, lr, latest_checkpoint(self.run_dir)))
                self._update()
                step += 1
                now = time.time()
                sums = [sums[0] + loss_sum, sums[1] + correct, sums[2] + images]
                record = {'kind': 'step', 'epoch': epoch, 'batch': batch, 'step': step,
                          'loss': loss_sum / images, 'top1': correct / images, 'lr': lr,
                          'img_per_s': images / max(now - tick, 1e-9)}
                if arch is not None:
                    record['arch'] = str(arch)
                self.metrics.write(record)
                bar.set_postfix(loss='%.3f' % record['loss'], lr='%.3g' % lr)
                bar.update(1)
                tick = now
                every = self.config.checkpoint_every
                if every and step % every == 0 and batch + 1 < self.batches:
                    self._checkpoint(epoch, batch + 1, step, sums)
        finally:
            bar.close()
        return step, sums

    def _step(self, data, label, step, epoch, batch):
        """Forward and backward of one batch; returns (lr, path, loss sum, correct)."""
        arch = (self.sampler.sample(step, epoch, batch, self.batches)
                if self.sampler is not None else None)
        lr = learning_rate(step, self.config.lr, self.warmup_steps, self.total_steps)
        self.optimizer.set_learning_rate(lr)
        self.optimizer.rescale_grad = 1.0 / (data.shape[0] * self.num_workers)
        mx.random.seed(int(np.random.SeedSequence([self.config.seed, step, self.rank])
                           .generate_state(1)[0] % (2 ** 31)))
        xs = gluon.utils.split_and_load(data, self.ctx, even_split=False)
        ys = gluon.utils.split_and_load(label, self.ctx, even_split=False)
        classes, eps = self.space.classes, self.config.label_smoothing
        with autograd.record():
            outs = [self._forward(x, arch) for x in xs]
            losses = [self.loss_fn(out, smooth_labels(y, classes, eps)) for out, y in zip(outs, ys)]
        autograd.backward(losses)
        loss_sum = sum(float(loss.sum().asscalar()) for loss in losses)
        correct = sum(float((out.argmax(axis=1) == y).sum().asscalar())
                      for out, y in zip(outs, ys))
        return lr, arch, loss_sum, correct

    def _forward(self, x, arch):
        if arch is None:
            return self.net(x)
        return self.net(x, arch.blocks, channel_mask(self.space, arch.channels, ctx=x.context))

    def _update(self):
        """Reduce and apply the gradients of the parameters this step's path used (a supernet
        path touches a fraction of the weights; the others keep weights and momenta)."""
        fresh = [i for i, (_, p) in enumerate(self.trainable) if p.list_data()[0]._fresh_grad]
        if self.kv is not None:
            for i in fresh:
                self.kv.pushpull(i, self.trainable[i][1].list_grad(), priority=-i)
        for k, updater in enumerate(self.updaters):
            weights = [self.trainable[i][1].list_data()[k] for i in fresh]
            grads = [self.trainable[i][1].list_grad()[k] for i in fresh]
            updater(list(fresh), grads, weights)
            for weight in weights:
                weight._fresh_grad = False

    def _end_epoch(self, epoch, step, sums):
        self._sync_running_stats()
        val_top1 = self._validate(epoch) if self.val_loader is not None else None
        loss_sum, correct, images = sums
        elapsed = time.time() - self._epoch_started
        record = {'kind': 'epoch', 'epoch': epoch, 'step': step, 'loss': loss_sum / images,
                  'top1': correct / images, 'val_top1': val_top1,
                  'lr': learning_rate(step, self.config.lr, self.warmup_steps, self.total_steps),
                  'img_per_s': images / max(elapsed, 1e-9), 'time_s': elapsed}
        self.metrics.write(record)
        logger.info('epoch %d: loss %.4f, top-1 %.4f, val top-1 %s', epoch, record['loss'],
                    record['top1'], 'n/a' if val_top1 is None else '%.4f' % val_top1)
        return record

    def _validate(self, epoch):
        ctx = self.ctx[0]
        if not self.net.is_supernet:
            return topk_accuracy(lambda x: self.net(x.as_in_context(ctx)), self.val_loader,
                                 ks=(1,))[0]
        scores = []
        for index in range(self.config.val_paths):  # SPEC §3.4: unconstrained validation paths
            arch = self.sampler.validation_arch(epoch, index)
            mask = channel_mask(self.space, arch.channels, ctx=ctx)

            def forward(x, arch=arch, mask=mask):
                return self.net(x.as_in_context(ctx), arch.blocks, mask)
            recalibrate_bn(self.net, _within_budget(self.recal_loader, self.config.recal_images),
                           forward)
            scores.append(topk_accuracy(forward, self.val_loader, ks=(1,))[0])
        for _, param in self.trainable:  # recalibration ran backward: no stale 'fresh' flags
            for array in param.list_data():
                array._fresh_grad = False
        return float(np.mean(scores))


def smooth_labels(label, classes, eps):
    """Label-smoothed targets (SPEC §3.1): 1 - eps + eps/K on the true class, eps/K elsewhere."""
    return mx.nd.one_hot(label, classes, on_value=1 - eps + eps / classes, off_value=eps / classes)


def _within_budget(loader, images):
    """Leading batches of ``loader`` while (i + 1) * batch < images (SPEC §4), at least one."""
    for i, (data, _) in enumerate(loader):
        if i and (i + 1) * data.shape[0] >= images:
            return
        yield data


def _describe(net):
    if net.is_supernet:
        return {'kind': 'supernet', 'space': asdict(net.space)}
    return {'kind': 'subnet', 'arch': net.arch.to_dict()}


def _shard(dataset, rank, num_workers):
    """Worker ``rank``'s images: every num_workers-th, all shards the same length."""
    if num_workers == 1:
        return dataset
    per_worker = len(dataset) // num_workers
    if per_worker == 0:
        raise DataError('%d images cannot be shared by %d workers' % (len(dataset), num_workers))
    return dataset.subset(np.arange(rank, per_worker * num_workers, num_workers))


def _create_kvstore(kvstore, num_devices):
    """(kvstore or None, rank, num_workers) for a kvstore name and a device count."""
    if kvstore not in KVSTORES:
        raise TrainingError('unknown kvstore %r; use one of %s' % (kvstore, ', '.join(KVSTORES)))
    if kvstore.startswith('dist'):
        missing = [k for k in _DMLC_ENV if k not in os.environ]
        if missing:
            raise TrainingError('--kvstore %s needs the DMLC environment of a parameter-server '
                                'job (missing %s); see the README section on distributed training'
                                % (kvstore, ', '.join(missing)))
        kv = mx.kv.create(kvstore)
        return kv, kv.rank, kv.num_workers
    if num_devices == 1:
        return None, 0, 1
    return mx.kv.create(kvstore), 0, 1


def _all_finite(params):
    arrays = [param.data() for param in params]
    return bool(np.isfinite(mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).sum().asscalar()))


# ---------------------------------------------------------------------------------------------
# files

def _prepare_run_dir(run_dir, resume, chief):
    """Create ``run_dir`` and prove it writable; refuse to start over an existing run."""
    if not chief:
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.probe-', dir=run_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise TrainingError('cannot write to output directory %s: %s'
                            % (run_dir, err.strerror or err)) from None
    if resume is False and latest_checkpoint(run_dir) is not None:
        raise TrainingError('%s already holds checkpoints of a run; pass --resume to continue '
                            'it or choose a new output directory' % run_dir)


def latest_checkpoint(run_dir):
    """Path of the newest complete checkpoint of ``run_dir``, or None."""
    folder = os.path.join(os.fspath(run_dir), CHECKPOINTS)
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder)
                   if n.startswith('ckpt-') and os.path.isfile(os.path.join(folder, n, _STATE)))
    return os.path.join(folder, names[-1]) if names else None


def _write_checkpoint(run_dir, step, keep, writers):
    """Write every ``name -> writer(path)`` into a temp dir, rename it to ckpt-<step>, prune."""
    folder = os.path.join(run_dir, CHECKPOINTS)
    target = os.path.join(folder, 'ckpt-%09d' % step)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.tmp-', dir=folder)
    except OSError as err:
        raise TrainingError('cannot write checkpoint in %s: %s' % (folder, err.strerror or err))
    try:
        for name, writer in writers.items():
            writer(os.path.join(tmp, name))
        if os.path.isdir(target):  # rewritten after a resume: replace the old one
            shutil.rmtree(target)
        os.rename(tmp, target)
    except (OSError, mx.base.MXNetError) as err:
        raise TrainingError('cannot write checkpoint %s (%s); the earlier checkpoints are intact'
                            % (target, err)) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    names = sorted(n for n in os.listdir(folder) if n.startswith('ckpt-'))
    for name in names[:-keep]:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return target


def _dump_json(path, data):
    with open(path, 'w') as handle:
        json.dump(data, handle)


@contextlib.contextmanager
def _writing(path):
    """Turn an OSError while appending to ``path`` into a one-line TrainingError."""
    try:
        yield path
    except OSError as err:
        raise TrainingError('cannot write %s: %s' % (path, err.strerror or err)) from None


def read_metrics(path):
    """The records of a metrics.jsonl file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class _MetricsLog:
    """metrics.jsonl of the chief; on resume, records past the checkpoint are dropped."""

    def __init__(self, path, chief):
        self.path, self.chief = path, chief
        self._records = []

    def open(self, position):
        if not self.chief:
            return
        kept = []
        if position is not None and os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path)
                    if (r['kind'] == 'step' and r['step'] <= position['step'])
                    or (r['kind'] == 'epoch' and r['epoch'] < position['epoch'])]
        write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept), error=TrainingError)
        self._records = kept

    def epochs(self):
        return [r for r in self._records if r['kind'] == 'epoch']

    def write(self, record):
        if self.chief:
            with _writing(self.path), open(self.path, 'a') as handle:
                handle.write(json.dumps(record) + '\n')


def plot_curves(metrics_path, png_path):
    """Training curve: loss per step (and per epoch), train and validation top-1 per epoch."""
    from .plots import new_figure, save_figure
    records = read_metrics(metrics_path)
    steps = [r for r in records if r['kind'] == 'step']
    epochs = [r for r in records if r['kind'] == 'epoch']
    fig, (loss_ax, top1_ax) = new_figure(ncols=2)
    loss_ax.plot([r['step'] for r in steps], [r['loss'] for r in steps], lw=0.6, alpha=0.6,
                 label='step')
    loss_ax.plot([r['step'] for r in epochs], [r['loss'] for r in epochs], 'o-', label='epoch mean')
    loss_ax.set_xlabel('step')
    loss_ax.set_ylabel('training loss (label-smoothed)')
    loss_ax.legend()
    top1_ax.plot([r['epoch'] + 1 for r in epochs], [100 * r['top1'] for r in epochs], 'o-',
                 label='train')
    val = [r for r in epochs if r.get('val_top1') is not None]
    top1_ax.plot([r['epoch'] + 1 for r in val], [100 * r['val_top1'] for r in val], 's-',
                 label='validation')
    top1_ax.set_xlabel('epoch')
    top1_ax.set_ylabel('top-1 (%)')
    top1_ax.legend()
    for ax in (loss_ax, top1_ax):
        ax.grid(alpha=0.3)
    return save_figure(fig, png_path)
