"""Accuracy of a network or of a supernet path on fixed batches."""
import mxnet as mx
import numpy as np

from .bn_recal import batchnorms, recalibrate_bn
from .errors import DataError
from .network import channel_mask

__all__ = ['topk_hits', 'topk_accuracy', 'PathEvaluator']


def topk_hits(logits, labels, ks=(1, 5)):
    """How many rows of ``logits`` (numpy, N x classes) rank their label in the top k, per k."""
    ranked = np.argsort(-logits, axis=1)
    labels = np.asarray(labels).astype(int)[:, None]
    return np.array([(ranked[:, :k] == labels).any(axis=1).sum() for k in ks])


def topk_accuracy(forward, batches, ks=(1, 5)):
    """Top-k accuracies (fractions) of ``forward(x) -> logits`` over ``(x, y)`` batches."""
    correct = np.zeros(len(ks))
    total = 0
    for data, label in batches:
        label = label.asnumpy() if isinstance(label, mx.nd.NDArray) else np.asarray(label)
        correct += topk_hits(forward(data).asnumpy(), label, ks)
        total += len(label)
    if total == 0:
        raise DataError('no evaluation images: the validation data is empty; give a dataset '
                        'with a validation split')
    return tuple(correct / total)


class PathEvaluator:
    """Top-1 of a supernet path: recalibrate BN on fixed training batches (SPEC §4), then
    evaluate on fixed validation batches. ``recalib_batches=[]`` switches recalibration off."""

    def __init__(self, supernet, recal_batches, val_batches, ctx=mx.cpu()):
        self.supernet = supernet
        self.recal_batches = [self._to_ctx(b, ctx) for b in recal_batches]
        self.val_batches = [(self._to_ctx(x, ctx), y) for x, y in val_batches]
        self.ctx = ctx
        # the supernet's trained statistics, restored before each path when not recalibrating
        self._trained_stats = [(bn, bn.running_mean.data().copy(), bn.running_var.data().copy())
                               for bn in batchnorms(supernet)]

    @staticmethod
    def _to_ctx(batch, ctx):
        data = batch[0] if isinstance(batch, (tuple, list)) else batch
        return data.as_in_context(ctx)

    def __call__(self, arch):
        mask = channel_mask(self.supernet.space, arch.channels, ctx=self.ctx)

        def forward(x):
            return self.supernet(x, arch.blocks, mask)
        if self.recal_batches:
            recalibrate_bn(self.supernet, self.recal_batches, forward)
        else:
            for bn, mean, var in self._trained_stats:
                bn.running_mean.set_data(mean)
                bn.running_var.set_data(var)
        return topk_accuracy(forward, self.val_batches, ks=(1,))[0]
