"""Calibration data for post-training quantization: one reader protocol for both runtimes.

A reader is anything with ``get_next() -> dict | None`` (onnxruntime's ``CalibrationDataReader``
protocol): each call returns ``{input_name: float32 N x C x H x W batch}`` until it returns None.
``open_reader`` builds one from real images with the evaluation preprocessing (SPEC §3.1), so
calibration sees what inference sees. ``read_batches`` drains and checks a reader before anything
is quantized or written, so bad data fails early with one clear message.
"""
import logging
import os
from typing import Optional, Protocol

import mxnet as mx
import numpy as np

from nas.data import calibration_batches, open_dataset
from nas.errors import DataError, QuantizationError

__all__ = ['CalibrationReader', 'ArrayReader', 'open_reader', 'read_batches', 'ProgressIter',
           'MXNET_CALIB_MODES', 'ORT_CALIB_METHODS', 'check_choice']

log = logging.getLogger(__name__)

MXNET_CALIB_MODES = ('naive', 'entropy')  # min/max and KL thresholds (SPEC §7)
ORT_CALIB_METHODS = ('minmax', 'entropy', 'percentile')


class CalibrationReader(Protocol):
    """What the quantizers read: ``{input name: batch}`` per call, None when exhausted."""

    def get_next(self) -> Optional[dict]:
        ...


class ArrayReader:
    """A reader over in-memory batches; ``on_batch(n_images)`` is called for each batch handed out
    (a progress bar). ``set_range`` limits it to batches ``start:end`` (onnxruntime calibrates in
    such chunks to bound memory), ``rewind()`` starts again over all of them."""

    def __init__(self, batches, input_name='data', on_batch=None):
        self.batches = [np.ascontiguousarray(batch, dtype=np.float32) for batch in batches]
        self.input_name = input_name
        self.on_batch = on_batch
        self.rewind()

    def get_next(self):
        if self._next >= self._stop:
            return None
        batch = self.batches[self._next]
        self._next += 1
        if self.on_batch is not None:
            self.on_batch(len(batch))
        return {self.input_name: batch}

    def set_range(self, start_index, end_index):
        self._next, self._stop = start_index, min(end_index, len(self.batches))

    def rewind(self):
        self.set_range(0, len(self.batches))

    def __len__(self):
        return len(self.batches)


def open_reader(data, input_size, num_images=320, batch_size=32, seed=0):
    """An ArrayReader of up to ``num_images`` calibration images from ``data``.

    ``data`` is ``'digits'``, an image folder or a ``.rec`` file (the train split, sampled with
    ``seed`` and eval-transformed to ``input_size``), or a ``.npy`` file holding already
    preprocessed float32 N x C x H x W images, used as they are.
    """
    if num_images < 1 or batch_size < 1:
        raise QuantizationError('the calibration set is empty (num_images=%d, batch_size=%d); ask '
                                'for at least one image' % (num_images, batch_size))
    if str(data).endswith('.npy'):
        return ArrayReader(_npy_batches(data, num_images, batch_size))
    dataset = open_dataset(data, 'train', input_size, seed)
    if len(dataset) == 0:
        raise QuantizationError('the calibration set %s is empty; give a dataset with images'
                                % data)
    batch_size = min(batch_size, len(dataset), num_images)
    num_batches = max(1, num_images // batch_size)
    return ArrayReader(calibration_batches(dataset, batch_size, num_batches, input_size, seed))


def _npy_batches(path, num_images, batch_size):
    if not os.path.isfile(path):
        raise DataError('%s does not exist; give a .npy file of preprocessed N x C x H x W images'
                        % path)
    try:
        images = np.load(path, mmap_mode='r')
    except ValueError as err:
        raise DataError('%s is not a readable .npy array (%s)' % (path, err)) from err
    if images.ndim != 4 or len(images) == 0:
        raise QuantizationError('%s holds an array of shape %s; calibration needs a non-empty '
                                'N x C x H x W array' % (path, images.shape))
    images = images[:num_images]
    return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def read_batches(reader, input_shape, input_name='data'):
    """Drain ``reader`` and return its batches after checking each against ``input_shape``
    (N, C, H, W; N is free). Raises QuantizationError for an empty set or a wrong image shape."""
    want = tuple(input_shape)[1:]
    batches = []
    while True:
        feed = reader.get_next()
        if not feed:
            break
        if input_name not in feed:
            raise QuantizationError('calibration batch %d has inputs %s; the model reads %r'
                                    % (len(batches), sorted(feed), input_name))
        batch = np.asarray(feed[input_name])
        if batch.ndim != 4 or batch.shape[1:] != want:
            raise QuantizationError(
                'calibration batch %d has shape %s; the model takes N x %s images: give %d-channel '
                '%dx%d images (preprocess them as for evaluation)'
                % (len(batches), batch.shape, ' x '.join(map(str, want)), *want))
        if not np.isfinite(batch).all():
            raise QuantizationError('calibration batch %d holds NaN or infinite values; check the '
                                    'preprocessing' % len(batches))
        batches.append(np.ascontiguousarray(batch, dtype=np.float32))
    if not batches or not sum(len(b) for b in batches):
        raise QuantizationError('the calibration set is empty; give at least one batch of images')
    return batches


class ProgressIter(mx.io.NDArrayIter):
    """``mx.io.NDArrayIter`` over calibration batches (what MXNet's calibration reads) that calls
    ``on_batch(n_images)`` for each batch it yields."""

    def __init__(self, batches, on_batch=None):
        data = np.concatenate(batches)
        super().__init__(data, batch_size=len(batches[0]), last_batch_handle='discard')
        self.on_batch = on_batch

    def next(self):
        batch = super().next()
        if self.on_batch is not None:
            self.on_batch(batch.data[0].shape[0])
        return batch


def check_choice(value, allowed, what):
    """Return ``value`` if it is one of ``allowed``, else raise QuantizationError naming them."""
    if value not in allowed:
        raise QuantizationError('unknown %s %r; use one of %s' % (what, value, ', '.join(allowed)))
    return value
