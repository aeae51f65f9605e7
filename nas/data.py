"""Image data, the one import for users of the library: datasets (``nas.datasets``), SPEC §3.1
transforms (``nas.transforms``) and seeded, resumable loaders (``nas.loaders``)."""
from .datasets import (SPLITS, VAL_FRACTION, DigitsDataset, ImageFolderDataset, RecordDataset,
                       load_digits, open_dataset, split_indices)
from .loaders import Loader, calibration_batches, make_loader, to_ndarray_iter
from .transforms import (AUGMENT_PROFILES, EVAL_CROP_FRACTION, MEAN_RGB, STD_RGB, Augment,
                         eval_transform, normalize, train_transform)

__all__ = ['MEAN_RGB', 'STD_RGB', 'EVAL_CROP_FRACTION', 'VAL_FRACTION', 'SPLITS', 'Augment',
           'AUGMENT_PROFILES', 'load_digits', 'split_indices', 'DigitsDataset',
           'ImageFolderDataset', 'RecordDataset', 'open_dataset', 'normalize', 'eval_transform',
           'train_transform', 'Loader', 'make_loader', 'to_ndarray_iter', 'calibration_batches']
