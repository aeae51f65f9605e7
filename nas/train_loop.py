"""The resumable training loop (SPEC §3) on one device, several devices or several machines.

Determinism: the batches of epoch e are a function of (seed, e) (``nas.loaders``), the path of
step s of (seed, s) (``nas.sampler``) and the dropout masks of (seed, s, rank) (``mx.random`` is
reseeded every step because MXNet cannot save its generator). A checkpoint therefore holds the
weights, the optimizer momenta, the sampler state, the Python/NumPy RNG states and the counters,
and a resumed run repeats the uninterrupted one step for step. In distributed runs rank 0 writes
the run directory (``nas.distributed``); every worker reads it on ``resume``.
"""
import logging
import math
import os
import sys
import time
from dataclasses import asdict

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .bn_recal import recalibrate_bn
from .checkpoint import (latest_checkpoint, prepare_run_dir, random_state, read_state,
                         set_random_state, write_checkpoint)
from .data import make_loader
from .distributed import Replicas, create_kvstore, shard
from .errors import DataError, TrainingError
from .evaluate import topk_accuracy
from .metrics_log import CURVE, METRICS, MetricsLog, plot_curves
from .network import channel_mask
from .precision import enable_precision, scaled
from .schedule import learning_rate
from .train_config import TrainResult

__all__ = ['Run', 'smooth_labels']

log = logging.getLogger(__name__)

_WEIGHTS, _OPTIMIZER = 'net.params', 'optimizer.states'
_PLOT_EVERY_S = 60  # the curve is redrawn after an epoch at most this often, and at the end
_RESUMABLE_CHANGES = ('checkpoint_every', 'keep_checkpoints', 'data_workers')


def smooth_labels(label, classes, eps):
    """Label-smoothed targets (SPEC §3.1): 1 - eps + eps/K on the true class, eps/K elsewhere."""
    return mx.nd.one_hot(label, classes, on_value=1 - eps + eps / classes, off_value=eps / classes)


class Run:
    """One training run of an uninitialised ``OneShotNet`` (a supernet needs ``sampler``)."""

    def __init__(self, net, train_set, val_set, run_dir, config, sampler, ctx, kvstore, progress):
        self.net, self.config, self.sampler = net, config, sampler
        self.run_dir = os.fspath(run_dir)
        self.ctx = list(ctx) if ctx else [mx.cpu()]
        self.progress = progress
        enable_precision(config.dtype, self.ctx)
        kv, self.rank, self.num_workers = create_kvstore(kvstore, len(self.ctx))
        self.chief = self.rank == 0
        self.space = net.space
        size = self.space.input_size
        self.train_set = train_set
        part = shard(train_set, self.rank, self.num_workers)
        self.train_loader = make_loader(part, config.batch_size, train=True, input_size=size,
                                        augment=config.augment, seed=config.seed,
                                        num_workers=config.data_workers)
        self.batches = len(self.train_loader)
        if self.batches == 0:
            raise DataError('the training data has %d images per worker, fewer than one batch of '
                            '%d; lower --batch-size' % (len(part), config.batch_size))
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
        self.trainable = [p for p in named.values() if p.grad_req != 'null']
        self.aux = [p for p in named.values() if p.grad_req == 'null']
        for name, param in named.items():
            if param.grad_req != 'null' and name.endswith(('gamma', 'beta', 'bias')):
                param.wd_mult = 0.0  # SPEC §3.1 no-wd
        # Reduction happens in Replicas (only the path's gradients), so the Trainer gets no
        # kvstore; ignore_stale_grad leaves the weights and momenta off the path untouched.
        self.trainer = gluon.Trainer(self.trainable, 'nag', {
            'momentum': config.momentum, 'wd': config.wd, 'learning_rate': config.lr},
            kvstore=None)
        if config.dtype == 'float16':
            from mxnet.contrib import amp
            amp.init_trainer(self.trainer)  # dynamic loss scaling
        self.replicas = Replicas(kv, self.trainable, self.aux, len(self.ctx) * self.num_workers)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        self.metrics = MetricsLog(os.path.join(self.run_dir, METRICS), self.chief)

    def run(self, resume):
        if self.chief:
            prepare_run_dir(self.run_dir, resume)
        position = self._restore() if resume else None
        if position is None:
            position = {'epoch': 0, 'batch': 0, 'step': 0, 'sums': [0.0, 0.0, 0]}
        self.metrics.open(position if resume else None)
        self.replicas.broadcast()
        result = TrainResult(self.run_dir)
        plotted = time.time()
        result.epochs = self.metrics.epochs()
        epoch, batch, step, sums = (position['epoch'], position['batch'], position['step'],
                                    position['sums'])
        while epoch < self.config.epochs:
            step, sums = self._train_epoch(epoch, batch, step, sums)
            result.epochs.append(self._end_epoch(epoch, step, sums))
            epoch, batch, sums = epoch + 1, 0, [0.0, 0.0, 0]
            self._checkpoint(epoch, 0, step, sums, synced=True)
            last = epoch == self.config.epochs
            if self.chief and (last or time.time() - plotted > _PLOT_EVERY_S):
                plot_curves(self.metrics.path, os.path.join(self.run_dir, CURVE))
                plotted = time.time()
        result.steps = step
        result.val_top1 = result.epochs[-1].get('val_top1') if result.epochs else None
        result.skipped_images = self.train_set.skipped
        result.rank = self.rank
        return result

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(self, epoch, batch, step, sums, synced=False):
        if not synced:
            self.replicas.average_running_stats()
        if not self.chief:
            return
        if not _all_finite(self.trainable):
            raise TrainingError('weights became non-finite at step %d; not checkpointing them. '
                                'The last good checkpoint is %s; lower --lr'
                                % (step, latest_checkpoint(self.run_dir)))
        state = dict(random_state(), version=2, epoch=epoch, batch=batch, step=step,
                     sums=list(sums), config=asdict(self.config), net=_describe(self.net),
                     num_workers=self.num_workers,
                     sampler=self.sampler.state_dict() if self.sampler else None)
        write_checkpoint(self.run_dir, step, self.config.keep_checkpoints, {
            _WEIGHTS: self.net.save_parameters, _OPTIMIZER: self.trainer.save_states}, state)

    def _restore(self):
        path = latest_checkpoint(self.run_dir)
        if path is None:
            log.info('no checkpoint in %s; starting from scratch', self.run_dir)
            return None
        state = read_state(path)
        self._check_compatible(state, path)
        try:
            self.net.load_parameters(os.path.join(path, _WEIGHTS), ctx=self.ctx)
            self.trainer.load_states(os.path.join(path, _OPTIMIZER))
        except (mx.base.MXNetError, AssertionError, OSError, ValueError, EOFError) as err:
            raise TrainingError('checkpoint %s is unreadable or does not fit this network (%s); '
                                'delete it to resume from the one before'
                                % (path, str(err).strip().splitlines()[0][:200])) from None
        if self.sampler is not None:
            self.sampler.load_state_dict(state['sampler'])
        set_random_state(state)
        log.info('resuming from %s (epoch %d, batch %d, step %d)', path, state['epoch'],
                 state['batch'], state['step'])
        return state

    def _check_compatible(self, state, path):
        if state.get('version') != 2:
            raise TrainingError('checkpoint %s was written by an older version (optimizer states '
                                'in another format); start a new run directory' % path)
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
                loss_sum, correct, images = self.replicas.global_sums(
                    loss_sum, correct, data.shape[0], self.num_workers)
                if not math.isfinite(loss_sum):
                    raise TrainingError(
                        'loss became %s at epoch %d, step %d (lr %.4g); training stopped before '
                        'updating the weights. The last good checkpoint is %s; lower --lr or check '
                        'the data' % (loss_sum, epoch, step, lr, latest_checkpoint(self.run_dir)))
                self._update(data.shape[0] * self.num_workers)
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
        self.trainer.set_learning_rate(lr)
        mx.random.seed(int(np.random.SeedSequence([self.config.seed, step, self.rank])
                           .generate_state(1)[0] % (2 ** 31)))
        xs = gluon.utils.split_and_load(data, self.ctx, even_split=False)
        ys = gluon.utils.split_and_load(label, self.ctx, even_split=False)
        classes, eps = self.space.classes, self.config.label_smoothing
        with autograd.record():
            outs = [self._forward(x, arch).astype('float32', copy=False) for x in xs]
            losses = [self.loss_fn(out, smooth_labels(y, classes, eps)) for out, y in zip(outs, ys)]
        autograd.backward(scaled(losses, self.trainer))
        loss_sum = sum(float(loss.sum().asscalar()) for loss in losses)
        correct = sum(float((out.argmax(axis=1) == y).sum().asscalar())
                      for out, y in zip(outs, ys))
        return lr, arch, loss_sum, correct

    def _forward(self, x, arch):
        if arch is None:
            return self.net(x)
        return self.net(x, arch.blocks, channel_mask(self.space, arch.channels, ctx=x.context))

    def _update(self, images):
        """Sum the gradients of the parameters this step's path used over the replicas and
        apply NAG to them (a supernet path touches a fraction of the weights)."""
        self.replicas.sum_grads([i for i, p in enumerate(self.trainable)
                                 if p.list_data()[0]._fresh_grad])
        self.trainer.update(images, ignore_stale_grad=True)
        _clear_fresh(self.trainable)  # a step skipped by the float16 loss scaler leaves them set

    def _end_epoch(self, epoch, step, sums):
        self.replicas.average_running_stats()
        val_top1 = self._validate(epoch) if self.val_loader is not None else None
        loss_sum, correct, images = sums
        elapsed = time.time() - self._epoch_started
        record = {'kind': 'epoch', 'epoch': epoch, 'step': step, 'loss': loss_sum / images,
                  'top1': correct / images, 'val_top1': val_top1,
                  'lr': learning_rate(step, self.config.lr, self.warmup_steps, self.total_steps),
                  'img_per_s': images / max(elapsed, 1e-9), 'time_s': elapsed}
        self.metrics.write(record)
        log.info('epoch %d: loss %.4f, top-1 %.4f, val top-1 %s', epoch, record['loss'],
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
        _clear_fresh(self.trainable)  # recalibration ran backward
        return float(np.mean(scores))


def _clear_fresh(params):
    """Mark every gradient stale, so that the next update touches only the next path's."""
    for param in params:
        for array in param.list_data():
            array._fresh_grad = False


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


def _all_finite(params):
    arrays = [param.data() for param in params]
    return bool(np.isfinite(mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).sum().asscalar()))
