"""Batches for training and evaluation.

Determinism: epoch ``e`` of a shuffled loader with seed ``s`` visits
``np.random.default_rng([s, e]).permutation(n)`` and augments sample ``i`` with
``np.random.default_rng([s, e, i])``.  An epoch therefore depends only on ``(s, e)``, not on worker
processes or earlier epochs: to resume, set ``loader.epoch`` before iterating.  (Gluon's own
transforms draw from a global generator, which would make a resumed run differ.)
"""
import mxnet as mx
import numpy as np
from mxnet.gluon.data import BatchSampler, DataLoader, Dataset, Sampler

from .errors import DataError
from .transforms import augment_image, augment_profile, eval_transform

__all__ = ['Loader', 'make_loader', 'to_ndarray_iter', 'calibration_batches']

class _EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: the epoch travels with each key; workers share no state.
    (gluon's RandomSampler shuffles with the global NumPy generator: not a function of (s, e).)"""

    def __init__(self, length, shuffle, seed):
        self._length, self._shuffle, self._seed = length, shuffle, seed
        self.epoch = 0

    def __iter__(self):
        epoch = self.epoch
        order = (np.random.default_rng([self._seed, epoch]).permutation(self._length)
                 if self._shuffle else range(self._length))
        return ((epoch, int(i)) for i in order)

    def __len__(self):
        return self._length


class _Transformed(Dataset):
    """``dataset`` under the train (``profile``) or eval (``profile`` None) transform."""

    def __init__(self, dataset, input_size, profile, seed):
        self._dataset, self._input_size, self._profile, self._seed = \
            dataset, input_size, profile, seed

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        epoch, index = key
        img, label = self._dataset[index]
        if self._profile is None:
            data = eval_transform(img, self._input_size)
        else:
            rng = np.random.default_rng([self._seed, epoch, index])
            data = augment_image(img, self._input_size, rng, self._profile)
        return data, np.float32(label)


class Loader:
    """Iterable of (data float32 N x 3 x H x W, label float32 N) NDArray batches; pass = epoch.

    ``epoch`` is the epoch the next pass runs; it advances after each complete pass.
    """

    def __init__(self, dataset, batch_size, input_size, profile, shuffle, seed, num_workers,
                 last_batch):
        self._sampler = _EpochSampler(len(dataset), shuffle, seed)
        batches = BatchSampler(self._sampler, batch_size, last_batch)
        self._loader = DataLoader(_Transformed(dataset, input_size, profile, seed),
                                  batch_sampler=batches, num_workers=num_workers)
        self.epoch = 0

    def __iter__(self):
        self._sampler.epoch = self.epoch
        yield from self._loader
        self.epoch += 1

    def __len__(self):
        return len(self._loader)


def make_loader(dataset, batch_size, train, input_size=32, augment=None, shuffle=None, seed=0,
                num_workers=0, last_batch=None):
    """A ``Loader``: training augments (``augment`` defaults to the dataset's profile), shuffles
    and drops the last partial batch; evaluation uses the eval transform, in order, keeping it."""
    if len(dataset) == 0:
        raise DataError('the dataset is empty; check the data path and split')
    profile = augment_profile(augment or dataset.default_augment) if train else None
    return Loader(dataset, batch_size, input_size, profile,
                  train if shuffle is None else shuffle, seed, num_workers,
                  last_batch or ('discard' if train else 'keep'))


def calibration_batches(dataset, batch_size, num_batches, input_size=32, seed=0):
    """Up to ``num_batches`` full float32 N x 3 x H x W eval-transformed batches from a seeded
    sample of the dataset (classes mixed), e.g. for onnxruntime calibration."""
    data, _ = _eval_sample(dataset, batch_size, num_batches, input_size, seed)
    return [data[i:i + batch_size] for i in range(0, len(data), batch_size)]


def to_ndarray_iter(dataset, batch_size, num_batches, input_size=32, seed=0):
    """The ``calibration_batches`` images as an ``mx.io.NDArrayIter`` (MXNet INT8 calibration)."""
    data, labels = _eval_sample(dataset, batch_size, num_batches, input_size, seed)
    return mx.io.NDArrayIter(data, labels, batch_size, last_batch_handle='discard')


def _eval_sample(dataset, batch_size, num_batches, input_size, seed):
    count = min(len(dataset), batch_size * num_batches) // batch_size * batch_size
    if count == 0:
        raise DataError('the dataset has %d images, fewer than one batch of %d; lower the batch '
                        'size' % (len(dataset), batch_size))
    picks = np.random.RandomState(seed).permutation(len(dataset))[:count]
    items = [dataset[int(i)] for i in picks]
    data = np.stack([eval_transform(img, input_size) for img, _ in items])
    return data, np.array([label for _, label in items], np.float32)
