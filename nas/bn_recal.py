"""BN recalibration before evaluating a sampled path (SPEC §4).

Supernet BN statistics are a blend over every path trained; a single path needs its own. We
re-estimate the statistics of the path's BNs on fixed training batches as a true cumulative
average (equal weight per batch: running mean = mean of batch means, running var = mean of biased
batch variances), by giving MXNet's BN the momentum (k-1)/k on the k-th batch: momentum 0 on the
first batch replaces the old statistics, so no reset is needed and BNs off the path keep theirs.
``mode='ema'`` keeps the reference behaviour (reset, then the BN's own momentum on every batch)
for parity studies (P4); there the off-path BNs are put back after the run.
"""
import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn

from .errors import TrainingError

__all__ = ['recalibrate_bn', 'batchnorms']


def batchnorms(net):
    """All ``nn.BatchNorm`` blocks of ``net``."""
    found = []
    net.apply(lambda block: found.append(block) if isinstance(block, nn.BatchNorm) else None)
    return found


def _retrace(net):
    """A hybridized net bakes BN momentum into its cached graph: drop it so the change counts."""
    if getattr(net, '_active', False):
        net._clear_cached_op()


def recalibrate_bn(net, batches, forward=None, mode='cumulative'):
    """Re-estimate the BN running statistics of ``net`` on ``batches`` (NDArrays or (x, y)).

    ``forward(x)`` runs the path to calibrate (default ``net(x)``; for a supernet pass e.g.
    ``lambda x: net(x, arch.blocks, mask)``). Only BNs that the forward executes change; the
    others keep their statistics.
    """
    if mode not in ('cumulative', 'ema'):
        raise ValueError("mode must be 'cumulative' or 'ema', got %r" % (mode,))
    forward = forward or net
    bns = batchnorms(net)
    saved = [bn._kwargs['momentum'] for bn in bns]
    before = [_reset(bn) for bn in bns] if mode == 'ema' else None
    count = 0
    try:
        for count, batch in enumerate(batches, 1):
            data = batch[0] if isinstance(batch, (tuple, list)) else batch
            if mode == 'cumulative':
                for bn in bns:
                    bn._kwargs['momentum'] = (count - 1.0) / count
                _retrace(net)
            with autograd.record(train_mode=True):
                out = forward(data)
            out.backward()  # MXNet 1.x updates BN running statistics in the backward pass
        mx.nd.waitall()
    finally:
        for bn, momentum in zip(bns, saved):
            bn._kwargs['momentum'] = momentum
        _retrace(net)
    if count == 0:
        raise TrainingError('BN recalibration needs at least one batch of training images')
    if before is not None:
        for bn, (mean, var) in zip(bns, before):
            if _is_reset(bn):  # never ran: off the path
                bn.running_mean.set_data(mean)
                bn.running_var.set_data(var)
    return count


def _reset(bn):
    """Set mean 0, var 1 (the reference's start for its EMA); returns the previous statistics."""
    previous = bn.running_mean.data().copy(), bn.running_var.data().copy()
    bn.running_mean.set_data(mx.nd.zeros(bn.running_mean.shape))
    bn.running_var.set_data(mx.nd.ones(bn.running_var.shape))
    return previous


def _is_reset(bn):
    """Still exactly mean 0 / var 1 after the run: an EMA step over any real batch moves the
    variance off 1, so only a BN that did not run is left there."""
    return (bn.running_mean.data() == 0).asnumpy().all() and \
        (bn.running_var.data() == 1).asnumpy().all()
