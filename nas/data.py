"""Image data for training, search and calibration: datasets, SPEC §3.1 transforms, loaders.

``open_dataset(spec, split)`` reads one of three sources:

* ``'digits'``: scikit-learn's 1797 handwritten digits, upscaled (embedded, nothing to download);
* a directory with one sub-folder per class (sorted names -> ids).  If it holds ``train/`` and
  ``val/`` sub-folders (ImageNet layout) ``split`` picks one of them;
* a ``.rec`` file written by im2rec, read through the ``.idx`` next to it.  If it is named
  ``<name>_train.rec`` or ``<name>_val.rec`` and the sibling for ``split`` exists, that file is
  used.

Otherwise ``split`` takes a seeded stratified 80/20 part of the source (``split_indices``).

Every dataset yields ``(HWC uint8 RGB image, int label)``.  Unreadable files are found when a
dataset is opened, from file signatures and record headers (no full decode, so opening ImageNet
stays cheap); they are logged once and counted in ``dataset.skipped``.  An image that passes that
check but fails to decode later is replaced by the next readable one, so batches keep their size
(counted in the process that decoded it).

Determinism: epoch ``e`` of a shuffled loader with seed ``s`` visits
``np.random.default_rng([s, e]).permutation(n)`` and augments sample ``i`` with
``np.random.default_rng([s, e, i])``.  An epoch therefore depends only on ``(s, e)``, not on worker
processes or earlier epochs: to resume, set ``loader.epoch`` before iterating.
"""
import copy
import functools
import logging
import math
import os
import re
import struct
from dataclasses import dataclass

import cv2
import mxnet as mx
import numpy as np
from mxnet.gluon.data import BatchSampler, DataLoader, Dataset, Sampler

from .errors import DataError

__all__ = ['MEAN_RGB', 'STD_RGB', 'EVAL_CROP_FRACTION', 'VAL_FRACTION', 'SPLITS', 'Augment',
           'AUGMENT_PROFILES', 'load_digits', 'split_indices', 'DigitsDataset',
           'ImageFolderDataset', 'RecordDataset', 'open_dataset', 'normalize', 'eval_transform',
           'train_transform', 'Loader', 'make_loader', 'to_ndarray_iter', 'calibration_batches',
           'write_image_folder', 'write_recordio']

logger = logging.getLogger(__name__)

MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # SPEC §3.1, on 0-255 pixels
STD_RGB = np.array([58.393, 57.12, 57.375], np.float32)
EVAL_CROP_FRACTION = 0.875  # SPEC §3.1: resize shorter side to ceil(size / 0.875), centre crop
VAL_FRACTION = 0.2
SPLITS = ('train', 'val', 'all')

# PCA of ImageNet RGB pixels (AlexNet lighting noise), rows = R, G, B.
_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]], np.float32)
_GREY = np.array([0.299, 0.587, 0.114], np.float32)

_RECORDIO_MAGIC = 0xced7230a  # dmlc RecordIO record start
_SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'BM', b'II*\x00', b'MM\x00*', b'P5', b'P6')


# ---------------------------------------------------------------------------------------------
# splits and the embedded digits

def split_indices(labels, split, seed=0, val_fraction=VAL_FRACTION):
    """Seeded stratified split: sorted indices; each class puts round(val_fraction * n) in val."""
    _check_split(split)
    labels = np.asarray(labels)
    if split == 'all':
        return np.arange(len(labels))
    rng = np.random.RandomState(seed)  # legacy generator: stream frozen across NumPy versions
    is_val = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(val_fraction * len(members)))
        if len(members) > 1:  # a class with 2+ images appears on both sides
            count = min(max(count, 1), len(members) - 1)
        is_val[rng.permutation(members)[:count]] = True
    return np.flatnonzero(is_val if split == 'val' else ~is_val)


@functools.lru_cache(maxsize=4)
def _all_digits(input_size):
    from sklearn.datasets import load_digits as sklearn_digits
    raw = sklearn_digits()
    pixels = raw.images.astype(np.float32) * (255.0 / 16.0)
    grey = np.stack([cv2.resize(img, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
                     for img in pixels])
    images = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    images.flags.writeable = False
    return images, raw.target.astype(np.int32)


def load_digits(input_size=32, split='train', seed=0):
    """scikit-learn digits: (uint8 N x size x size x 3 RGB, int32 labels); see split_indices."""
    images, labels = _all_digits(int(input_size))
    keep = split_indices(labels, split, seed)
    return images[keep], labels[keep]


# ---------------------------------------------------------------------------------------------
# datasets

class _ImageDataset(Dataset):
    """``_items[i]`` is what ``_load`` decodes into an HWC uint8 RGB image (None if unreadable)."""

    default_augment = 'imagenet'

    def __init__(self, items, labels, classes, skipped, source):
        self._items = items
        self.labels = np.asarray(labels, np.int32)
        self.classes = list(classes)
        self.skipped = skipped
        self.source = source

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        for k in range(len(self)):
            j = (idx + k) % len(self)
            img = self._load(self._items[j])
            if img is not None:
                return img, int(self.labels[j])
            self.skipped += 1
            logger.warning('cannot decode %s in %s; using the next image instead',
                           self._items[j], self.source)
        raise DataError('no image of %s can be decoded; check the files' % self.source)

    def _load(self, item):
        raise NotImplementedError

    def subset(self, indices):
        """A view holding only ``indices`` (a train/val split)."""
        view = copy.copy(self)
        view._items = self._items[indices]
        view.labels = self.labels[indices]
        return view


class DigitsDataset(_ImageDataset):
    """The embedded digits (see ``load_digits``); trained with the 'light' augmentation profile."""

    default_augment = 'light'

    def __init__(self, split='all', input_size=32, seed=0):
        images, labels = load_digits(input_size, split, seed)
        super().__init__(images, labels, [str(c) for c in range(10)], 0, 'digits')

    def _load(self, item):
        return item


class ImageFolderDataset(_ImageDataset):
    """Images under ``root/<class>/`` (any depth); class ids follow sorted folder names."""

    def __init__(self, root):
        root = _existing_path(root)
        if not os.path.isdir(root):
            raise DataError('%s is not a directory; give a folder with one sub-folder per class'
                            % root)
        classes = sorted(name for name in os.listdir(root)
                         if not name.startswith('.') and os.path.isdir(os.path.join(root, name)))
        if not classes:
            raise DataError('%s has no class sub-folders; put the images of each class in '
                            '%s/<class>/' % (root, root))
        paths, labels, bad = [], [], []
        for label, name in enumerate(classes):
            found = 0
            for path in _files_under(os.path.join(root, name)):
                if _looks_like_image(path):
                    paths.append(path)
                    labels.append(label)
                    found += 1
                else:
                    bad.append(path)
            if not found:
                raise DataError('class folder %s has no images; add images or remove the folder'
                                % os.path.join(root, name))
        _warn_skipped(root, bad)
        super().__init__(np.array(paths), labels, classes, len(bad), root)

    def _load(self, path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class RecordDataset(_ImageDataset):
    """An im2rec RecordIO file, read through the ``.idx`` next to it; classes '0'..'max label'."""

    def __init__(self, rec_path):
        rec_path = _existing_path(rec_path)
        idx_path = os.path.splitext(rec_path)[0] + '.idx'
        if not os.path.isfile(idx_path):
            raise DataError('%s has no index %s next to it; write both with im2rec (it makes '
                            'prefix.rec and prefix.idx)' % (rec_path, idx_path))
        try:
            reader = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, 'r')
        except (ValueError, IndexError) as err:
            raise DataError('index %s is malformed (%s); regenerate it with im2rec'
                            % (idx_path, err)) from err
        index = dict(reader.idx)
        reader.close()
        keys, labels, bad = [], [], []
        size = os.path.getsize(rec_path)
        with open(rec_path, 'rb') as f:
            for key, offset in index.items():
                label = _record_label(f, offset, size)
                if label is None:
                    bad.append('record %d' % key)
                else:
                    keys.append(key)
                    labels.append(label)
        if not keys:
            raise DataError('%s has no readable record (%d unreadable); it is truncated or not a '
                            'RecordIO file, write it again with im2rec' % (rec_path, len(bad)))
        _warn_skipped(rec_path, bad)
        super().__init__(np.array(keys), labels, [str(c) for c in range(max(labels) + 1)],
                         len(bad), rec_path)
        self._idx_path = idx_path
        self._reader = None  # opened in the process that reads (DataLoader workers included)

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_reader'] = None
        return state

    def _load(self, key):
        if self._reader is None:
            self._reader = mx.recordio.MXIndexedRecordIO(self._idx_path, self.source, 'r')
        try:
            _, img = mx.recordio.unpack_img(self._reader.read_idx(int(key)), cv2.IMREAD_COLOR)
        except mx.base.MXNetError:
            return None
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def open_dataset(spec, split='train', input_size=32, seed=0):
    """``'digits'``, an image folder or a ``.rec`` file, restricted to ``split`` (module doc)."""
    _check_split(split)
    if spec == 'digits':
        return DigitsDataset(split, input_size, seed)
    path = _existing_path(spec)
    if os.path.isdir(path):
        if all(os.path.isdir(os.path.join(path, part)) for part in ('train', 'val')):
            if split == 'all':
                raise DataError("%s is split into train/ and val/; ask for split 'train' or 'val'"
                                % path)
            return ImageFolderDataset(os.path.join(path, split))
        dataset = ImageFolderDataset(path)
    elif path.endswith('.rec'):
        match = re.match(r'(.*)_(train|val)\.rec$', path)
        sibling = match and '%s_%s.rec' % (match.group(1), split)
        if sibling and os.path.isfile(sibling):
            return RecordDataset(sibling)
        dataset = RecordDataset(path)
    else:
        raise DataError("%s is neither a directory nor a .rec file; give 'digits', an image "
                        "folder or an im2rec .rec file" % path)
    return dataset.subset(split_indices(dataset.labels, split, seed))


def _check_split(split):
    if split not in SPLITS:
        raise DataError('unknown split %r; use one of %s' % (split, ', '.join(SPLITS)))


def _existing_path(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError("%s does not exist; give 'digits', an image folder or a .rec file" % path)
    return path


def _files_under(folder):
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(files):
            if not name.startswith('.'):
                yield os.path.join(top, name)


def _is_image_bytes(head):
    return head.startswith(_SIGNATURES) or (head[:4] == b'RIFF' and head[8:12] == b'WEBP')


def _looks_like_image(path):
    try:
        with open(path, 'rb') as f:
            return _is_image_bytes(f.read(16))
    except OSError:
        return False


def _record_label(f, offset, size):
    """The label of the record at ``offset`` if its headers are intact, else None."""
    f.seek(offset)
    head = f.read(8)
    if len(head) < 8:
        return None
    magic, length_flag = struct.unpack('<II', head)
    length, cflag = length_flag & ((1 << 29) - 1), length_flag >> 29
    if magic != _RECORDIO_MAGIC or cflag > 1 or offset + 8 + length > size:
        return None
    try:
        header, img = mx.recordio.unpack(f.read(min(length, 4096)))
    except (struct.error, ValueError):
        return None
    label = float(np.ravel(header.label)[0])
    if not _is_image_bytes(img[:16]) or label < 0 or not label.is_integer():  # NaN too
        return None
    return int(label)


def _warn_skipped(source, bad):
    if bad:
        logger.warning('skipped %d unreadable item(s) in %s, e.g. %s', len(bad), source,
                       ', '.join(bad[:3]))


# ---------------------------------------------------------------------------------------------
# transforms: HWC uint8 RGB in, CHW float32 normalised out

@dataclass(frozen=True)
class Augment:
    """A training augmentation profile (SPEC §3.1 is 'imagenet')."""

    area: tuple      # random-resized-crop area fraction range
    ratio: tuple     # crop aspect-ratio (w/h) range
    flip: bool       # random horizontal flip
    jitter: float    # brightness/contrast/saturation strength
    lighting: float  # PCA lighting noise std


AUGMENT_PROFILES = {
    'imagenet': Augment((0.08, 1.0), (3 / 4, 4 / 3), True, 0.4, 0.1),
    # digits: a flip changes the digit and a 0.08 crop loses it
    'light': Augment((0.64, 1.0), (3 / 4, 4 / 3), False, 0.1, 0.0),
    'none': None,  # the evaluation transform
}


def normalize(img):
    """HWC 0-255 RGB -> CHW float32 with the SPEC §3.1 mean and std."""
    return np.ascontiguousarray(((np.asarray(img, np.float32) - MEAN_RGB) / STD_RGB)
                                .transpose(2, 0, 1))


def eval_transform(img, input_size):
    """SPEC §3.1 evaluation: shorter side to ceil(size / 0.875), centre crop, normalise."""
    short = int(math.ceil(input_size / EVAL_CROP_FRACTION))
    h, w = img.shape[:2]
    nh, nw = (short, max(short, int(round(w * short / h)))) if h <= w else \
        (max(short, int(round(h * short / w))), short)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (nh - input_size) // 2, (nw - input_size) // 2
    return normalize(img[y0:y0 + input_size, x0:x0 + input_size])


def train_transform(img, input_size, rng, augment='imagenet'):
    """Random augmentation by profile ``augment`` (a key of AUGMENT_PROFILES), then normalise."""
    return _augment(img, input_size, rng, _profile(augment))


def _profile(augment):
    if augment not in AUGMENT_PROFILES:
        raise DataError('unknown augmentation %r; use one of %s'
                        % (augment, ', '.join(AUGMENT_PROFILES)))
    return AUGMENT_PROFILES[augment]


def _augment(img, input_size, rng, profile):
    if profile is None:
        return eval_transform(img, input_size)
    y0, x0, ch, cw = _crop_box(img.shape[0], img.shape[1], profile.area, profile.ratio, rng)
    img = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (input_size, input_size),
                     interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if profile.flip and rng.random() < 0.5:
        img = img[:, ::-1]
    if profile.jitter:
        img = _color_jitter(img, profile.jitter, rng)
    if profile.lighting:
        img = img + _EIGVEC @ (rng.normal(0.0, profile.lighting, 3) * _EIGVAL).astype(np.float32)
    return normalize(np.minimum(np.maximum(img, 0.0), 255.0))  # np.clip is 2x slower here


def _crop_box(h, w, area, ratio, rng):
    """(y0, x0, height, width) of a random-resized crop; after 10 misses, a centred one."""
    log_ratio = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    aspect = min(max(w / h, ratio[0]), ratio[1])
    cw, ch = (w, int(round(w / aspect))) if w / h < aspect else (int(round(h * aspect)), h)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _color_jitter(img, strength, rng):
    """Brightness, contrast and saturation in random order (as MXNet's ColorJitterAug)."""
    for op in rng.permutation(3):
        alpha = 1.0 + rng.uniform(-strength, strength)
        if op == 0:
            img = img * alpha
        elif op == 1:  # towards the mean grey level
            img = img * alpha + (1.0 - alpha) * float((img @ _GREY).mean())
        else:  # towards each pixel's grey level
            img = img * alpha + (1.0 - alpha) * (img @ _GREY)[..., None]
    return img


# ---------------------------------------------------------------------------------------------
# loaders

class _EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: the epoch travels with each key; workers share no state."""

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
            data = _augment(img, self._input_size, rng, self._profile)
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
    profile = _profile(augment or dataset.default_augment) if train else None
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


# ---------------------------------------------------------------------------------------------
# fixture writers (tests, demo)

def write_image_folder(root, images, labels, classes=None, ext='.png'):
    """Write RGB ``images`` as ``root/<class>/<i>.<ext>``, the layout ImageFolderDataset reads."""
    labels = np.asarray(labels, np.int64)
    if classes is None:  # zero-padded so that sorted names keep the label order
        classes = ['%0*d' % (len(str(labels.max())), c) for c in range(labels.max() + 1)]
    if list(classes) != sorted(classes):
        raise DataError('classes %s are not sorted; ImageFolderDataset numbers sorted folder '
                        'names, so pass them sorted' % list(classes))
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = os.path.join(os.fspath(root), classes[label])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, '%06d%s' % (i, ext))
        if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise DataError('cannot write %s; check the extension and the permissions' % path)
    return root


def write_recordio(prefix, images, labels, img_fmt='.jpg'):
    """Write RGB ``images`` to prefix.rec + prefix.idx as im2rec does; returns the .rec path."""
    prefix = os.fspath(prefix)
    quality = 95 if img_fmt.lower() in ('.jpg', '.jpeg') else 3  # JPEG quality / PNG compression
    writer = mx.recordio.MXIndexedRecordIO(prefix + '.idx', prefix + '.rec', 'w')
    try:
        for i, (img, label) in enumerate(zip(images, labels)):
            header = mx.recordio.IRHeader(0, float(label), i, 0)
            writer.write_idx(i, mx.recordio.pack_img(header, cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                                     quality=quality, img_fmt=img_fmt))
    finally:
        writer.close()
    return prefix + '.rec'
