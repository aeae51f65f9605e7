"""Image transforms: HWC uint8 RGB in, CHW float32 normalised out (SPEC §3.1).

Written here rather than taken from ``gluon.data.vision.transforms``, whose random transforms
draw from global generators: ours take the sample's own ``rng`` (``nas.loaders``), which is what
makes a resumed run repeat the uninterrupted one.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import DataError

__all__ = ['MEAN_RGB', 'STD_RGB', 'EVAL_CROP_FRACTION', 'Augment', 'AUGMENT_PROFILES', 'normalize',
           'eval_transform', 'train_transform', 'augment_profile', 'augment_image']

MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # SPEC §3.1, on 0-255 pixels
STD_RGB = np.array([58.393, 57.12, 57.375], np.float32)
EVAL_CROP_FRACTION = 0.875  # SPEC §3.1: resize shorter side to ceil(size / 0.875), centre crop

# PCA of ImageNet RGB pixels (AlexNet lighting noise), rows = R, G, B.
_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]], np.float32)
_GREY = np.array([0.299, 0.587, 0.114], np.float32)

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
    return augment_image(img, input_size, rng, augment_profile(augment))


def augment_profile(augment):
    """The Augment of a profile name (None for 'none': the evaluation transform)."""
    if augment not in AUGMENT_PROFILES:
        raise DataError('unknown augmentation %r; use one of %s'
                        % (augment, ', '.join(AUGMENT_PROFILES)))
    return AUGMENT_PROFILES[augment]


def augment_image(img, input_size, rng, profile):
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
