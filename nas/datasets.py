"""Image datasets for training, search and calibration, opened by ``open_dataset(spec, split)``:

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
"""
import copy
import functools
import logging
import os
import re
import struct

import cv2
import mxnet as mx
import numpy as np
from mxnet.gluon.data import Dataset

from .errors import DataError

__all__ = ['VAL_FRACTION', 'SPLITS', 'load_digits', 'split_indices', 'DigitsDataset',
           'ImageFolderDataset', 'RecordDataset', 'open_dataset']

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2
SPLITS = ('train', 'val', 'all')

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
            log.warning('cannot decode %s in %s; using the next image instead',
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

    # Kept instead of gluon.data.vision.ImageFolderDataset, which lists only files directly in a
    # class folder, by extension, and finds unreadable files only when decoding them.

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

    # Kept instead of gluon.data.vision.ImageRecordDataset, which cannot tell a damaged record
    # before decoding it (here: header checks at open, so skipped records are counted up front).

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
        log.warning('skipped %d unreadable item(s) in %s, e.g. %s', len(bad), source,
                       ', '.join(bad[:3]))

