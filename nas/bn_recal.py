"""BN recalibration before evaluating a sampled path (SPEC §4).

Supernet BN statistics are a blend over every path trained; a single path needs its own. We reset
the running statistics and re-estimate them on fixed training batches as a true cumulative average
(equal weight per batch: running mean = mean of batch means, running var = mean of biased batch
variances), by giving MXNet's BN the momentum (k-1)/k on the k-th batch. ``mode='ema'`` keeps the
reference behaviour (its BN momentum on every batch) for parity studies (P4).
"""
import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn

from .errors import TrainingError

__all__ = ['recalibrate_bn', 'batchnorms']


def batchnorms(net):
    """All ``nn.BatchNorm`` blocks of ``net``."""
    found = []

    def visit(block):
        if isinstance(block, nn.BatchNorm):
            found.append(block)
        for child in block._children.values():
            visit(child)
    visit(net)
    return found


def _retrace(net):
    """A hybridized net bakes BN momentum into its cached graph: drop it so the change counts."""
    if getattr(net, '_active', False):
        net._clear_cached_op()


def recalibrate_bn(net, batches, forward=None, mode='cumulative'):
    """Re-estimate the BN running statistics of ``net`` on ``batches`` (NDArrays or (x, y)).

    ``forward(x)`` runs the path to calibrate (default ``net(x)``; for a supernet pass e.g.
    ``lambda x: net(x, arch.blocks, mask)``). Only BNs that the forward executes change.
    """
    if mode not in ('cumulative', 'ema'):
        raise ValueError("mode must be 'cumulative' or 'ema', got %r" % (mode,))
    forward = forward or net
    bns = batchnorms(net)
    saved = [bn._kwargs['momentum'] for bn in bns]
    for bn in bns:
        bn.running_mean.set_data(mx.nd.zeros(bn.running_mean.shape))
        bn.running_var.set_data(mx.nd.ones(bn.running_var.shape))
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
    return count
