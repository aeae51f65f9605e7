"""Writers of test data sets: an image folder and an im2rec RecordIO file."""
import os

import cv2
import mxnet as mx
import numpy as np


def write_image_folder(root, images, labels, classes=None, ext='.png'):
    """Write RGB ``images`` as ``root/<class>/<i>.<ext>``, the layout ImageFolderDataset reads."""
    labels = np.asarray(labels, np.int64)
    if classes is None:  # zero-padded so that sorted names keep the label order
        classes = ['%0*d' % (len(str(labels.max())), c) for c in range(labels.max() + 1)]
    if list(classes) != sorted(classes):
        raise ValueError('classes %s are not sorted; ImageFolderDataset numbers sorted folder '
                         'names, so pass them sorted' % list(classes))
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = os.path.join(os.fspath(root), classes[label])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, '%06d%s' % (i, ext))
        if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError('cannot write %s; check the extension and the permissions' % path)
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
