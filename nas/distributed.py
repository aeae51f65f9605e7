"""Keeping replicas in step: several devices of one machine through a ``local``/``device``
kvstore, several machines through MXNet's parameter server (``dist_sync``/``dist_device_sync``).

Every worker trains the same path per step on its own shard (every num_workers-th image from its
rank); only the gradients of parameters the step's path touched are summed (a supernet path
touches a fraction of the weights), and BN running statistics are averaged over replicas before
validation and checkpoints, since the replicas saw different images.
"""
import os

import mxnet as mx
import numpy as np

from .errors import DataError, TrainingError

__all__ = ['KVSTORES', 'create_kvstore', 'shard', 'Replicas']

KVSTORES = ('local', 'device', 'dist_sync', 'dist_device_sync')
_DMLC_ENV = ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
             'DMLC_NUM_WORKER')


def create_kvstore(kvstore, num_devices):
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


def shard(dataset, rank, num_workers):
    """Worker ``rank``'s images: every num_workers-th, all shards the same length."""
    if num_workers == 1:
        return dataset
    per_worker = len(dataset) // num_workers
    if per_worker == 0:
        raise DataError('%d images cannot be shared by %d workers' % (len(dataset), num_workers))
    return dataset.subset(np.arange(rank, per_worker * num_workers, num_workers))


class Replicas:
    """The parameters ``trainable`` and ``aux`` (BN statistics) of every device and worker, kept
    equal through ``kv`` (None: one device, nothing to do). Keys: trainable, then aux, then one
    slot for the step's (loss, correct, images) sums."""

    def __init__(self, kv, trainable, aux, replicas):
        self.kv, self.trainable, self.aux, self.replicas = kv, trainable, aux, replicas
        self._sums_key = len(trainable) + len(aux)

    def broadcast(self):
        """Register every parameter; all replicas start from rank 0's values."""
        if self.kv is None:
            return
        for key, param in enumerate(self.trainable + self.aux):
            self.kv.init(key, param.data(param.list_ctx()[0]))
            self.kv.pull(key, out=param.list_data(), priority=-key)
        self.kv.init(self._sums_key, mx.nd.zeros(3))
        mx.nd.waitall()

    def sum_grads(self, indices):
        """Sum the gradients of ``trainable[i]`` for i in ``indices`` over all replicas."""
        if self.kv is None:
            return
        for i in indices:
            self.kv.pushpull(i, self.trainable[i].list_grad(), priority=-i)

    def average_running_stats(self):
        """Average BN running statistics over devices and workers."""
        if self.kv is None:
            return
        for offset, param in enumerate(self.aux):
            arrays = param.list_data()
            self.kv.pushpull(len(self.trainable) + offset, arrays, priority=-offset)
            for array in arrays:
                array /= self.replicas
        mx.nd.waitall()

    def global_sums(self, loss_sum, correct, images, num_workers):
        """The step's sums over all workers."""
        if self.kv is None or num_workers == 1:
            return loss_sum, correct, images
        stats = mx.nd.array([loss_sum, correct, images])
        self.kv.pushpull(self._sums_key, stats)
        loss_sum, correct, images = stats.asnumpy().tolist()
        return loss_sum, correct, int(images)
