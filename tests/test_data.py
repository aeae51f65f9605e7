"""nas.data: splits, folder and RecordIO round trips, skipping, errors, transforms, loaders."""
import logging
import os

import numpy as np
import pytest

from fixtures import write_image_folder, write_recordio
from nas import data
from nas.errors import DataError
from nas.transforms import _crop_box


@pytest.fixture(scope='module')
def digits30():
    """Three real digits of each class, 32x32, tinted so that a swap of R and B shows."""
    images, labels = data.load_digits(32, 'all')
    picks = np.concatenate([np.flatnonzero(labels == c)[:3] for c in range(10)])
    tinted = (images[picks] * np.array([1.0, 0.6, 0.3])).astype(np.uint8)
    return tinted, labels[picks]


@pytest.fixture
def folder(tmp_path, digits30):
    return write_image_folder(str(tmp_path / 'imgs'), *digits30)


def _class_major(images, labels):
    """The order ImageFolderDataset reads a write_image_folder tree in: by class, then by index."""
    order = np.argsort(labels, kind='stable')
    return images[order], labels[order]


# --- digits and splits --------------------------------------------------------------------------

def test_split_is_stratified_disjoint_and_seeded():
    labels = data.load_digits(32, 'all')[1]
    train, val = (data.split_indices(labels, s, seed=0) for s in ('train', 'val'))
    assert len(labels) == 1797
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.union1d(train, val), np.arange(1797))
    counts = np.bincount(labels)
    assert np.array_equal(np.bincount(labels[val]), np.round(0.2 * counts).astype(int))
    assert np.array_equal(data.split_indices(labels, 'val', seed=0), val)
    assert not np.array_equal(data.split_indices(labels, 'val', seed=1), val)
    small = np.array([0, 0, 1, 1, 1, 1, 1, 2])  # round(0.4) = 0, but a 2-image class gives 1
    assert sorted(small[data.split_indices(small, 'val')]) == [0, 1]


def test_load_digits_split_matches_all_and_is_repeatable():
    all_images, all_labels = data.load_digits(32, 'all')
    images, labels = data.load_digits(32, 'train', seed=0)
    keep = data.split_indices(all_labels, 'train', seed=0)
    assert np.array_equal(images, all_images[keep]) and np.array_equal(labels, all_labels[keep])
    again = data.load_digits(32, 'train', seed=0)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
    assert len(data.load_digits(32, 'val')[1]) + len(labels) == 1797


def test_digits_values_are_scaled_grey_uint8():
    from sklearn.datasets import load_digits as sklearn_digits
    images, labels = data.load_digits(32, 'all')
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and set(labels) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()
    native = data.load_digits(8, 'all')[0][..., 0]  # no resize at 8x8: exactly x 255/16
    assert np.array_equal(native, np.rint(sklearn_digits().images * 255 / 16).astype(np.uint8))


# --- image folders and RecordIO -----------------------------------------------------------------

def test_image_folder_round_trip_is_exact_for_png(folder, digits30):
    dataset = data.ImageFolderDataset(folder)
    images, labels = _class_major(*digits30)
    assert dataset.classes == [str(c) for c in range(10)] and dataset.skipped == 0
    assert len(dataset) == 30 and np.array_equal(dataset.labels, labels)
    for i in range(len(dataset)):
        img, label = dataset[i]
        assert label == labels[i] and img.dtype == np.uint8
        assert np.array_equal(img, images[i])


@pytest.mark.parametrize('img_fmt, mean_error, max_error', [('.png', 0, 0), ('.jpg', 3, 32)])
def test_recordio_round_trip(tmp_path, digits30, img_fmt, mean_error, max_error):
    images, labels = digits30
    rec = write_recordio(str(tmp_path / 'digits'), images, labels, img_fmt=img_fmt)
    assert os.path.isfile(str(tmp_path / 'digits.idx'))
    dataset = data.RecordDataset(rec)
    assert np.array_equal(dataset.labels, labels) and dataset.skipped == 0
    decoded = np.stack([dataset[i][0] for i in range(len(dataset))])
    assert [dataset[i][1] for i in range(len(dataset))] == list(labels)
    error = np.abs(decoded.astype(int) - images)
    assert error.mean() <= mean_error and error.max() <= max_error


def test_non_images_in_a_folder_are_skipped_and_counted(folder, digits30, caplog):
    with open(os.path.join(folder, '3', 'notes.txt'), 'w') as f:
        f.write('not an image')
    with open(os.path.join(folder, '5', 'broken.png'), 'wb') as f:
        f.write(b'GIF89a not really')
    with open(os.path.join(folder, '5', '.DS_Store'), 'wb') as f:  # hidden: ignored, not counted
        f.write(b'\0\0\0\1Bud1')
    write_image_folder(os.path.join(folder, '5', 'more'), digits30[0][:1], [0])  # any depth
    with caplog.at_level(logging.WARNING, logger='nas.datasets'):
        dataset = data.ImageFolderDataset(folder)
    assert dataset.skipped == 2 and len(dataset) == 31
    assert 'skipped 2 unreadable item' in caplog.text


def test_records_that_are_not_images_are_skipped_and_counted(tmp_path, digits30):
    import mxnet as mx
    rec = write_recordio(str(tmp_path / 'd'), *digits30)
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / 'd.idx'), rec, 'w')  # rewrite, 3 records
    for key, payload in enumerate([b'plain text', None, b'\x89PNG\r\n\x1a\n']):
        if payload is None:
            payload = mx.recordio.pack_img(mx.recordio.IRHeader(0, 4.0, key, 0), digits30[0][0])
        else:
            payload = mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, key, 0), payload)
        writer.write_idx(key, payload)
    writer.close()
    dataset = data.RecordDataset(rec)
    assert dataset.skipped == 1 and list(dataset.labels) == [4, 1]
    assert dataset[1][1] == 4  # the PNG signature alone passes the scan; its decode fails


def test_an_image_that_fails_to_decode_is_replaced_by_the_next(folder, digits30, caplog):
    path = os.path.join(folder, '0', '000000.png')
    with open(path, 'rb') as f:
        head = f.read(60)
    with open(path, 'wb') as f:  # a valid PNG signature, truncated body
        f.write(head)
    dataset = data.ImageFolderDataset(folder)
    assert dataset.skipped == 0 and len(dataset) == 30
    with caplog.at_level(logging.WARNING, logger='nas.datasets'):
        img, label = dataset[0]
    images, labels = _class_major(*digits30)
    assert np.array_equal(img, images[1]) and label == labels[1]
    assert dataset.skipped == 1 and 'cannot decode' in caplog.text
    with pytest.raises(DataError, match='no image .* can be decoded'):
        dataset.subset([0])[0]


def test_truncated_recordio_keeps_whole_records(tmp_path, digits30):
    rec = write_recordio(str(tmp_path / 'digits'), *digits30, img_fmt='.png')
    with open(rec, 'rb') as f:
        raw = f.read()
    with open(rec, 'wb') as f:
        f.write(raw[:len(raw) * 2 // 3])
    dataset = data.RecordDataset(rec)
    assert 0 < len(dataset) < 30 and dataset.skipped == 30 - len(dataset)
    images, labels = digits30
    for i in range(len(dataset)):  # the surviving records are the leading ones, intact
        img, label = dataset[i]
        assert label == labels[i] and np.array_equal(img, images[i])


@pytest.mark.parametrize('damage', ['cut', 'garble', 'bad_index'])
def test_unusable_recordio_raises(tmp_path, digits30, damage):
    rec = write_recordio(str(tmp_path / 'digits'), *digits30)
    if damage == 'cut':
        with open(rec, 'r+b') as f:
            f.truncate(10)
    elif damage == 'garble':
        with open(rec, 'wb') as f:
            f.write(np.random.RandomState(0).bytes(20000))
    else:
        with open(str(tmp_path / 'digits.idx'), 'w') as f:
            f.write('zero\tten\n')
    with pytest.raises(DataError, match='digits'):
        data.RecordDataset(rec)


def test_data_errors_name_the_path(tmp_path, digits30):
    with pytest.raises(DataError, match='does not exist'):
        data.open_dataset(str(tmp_path / 'missing'), 'train')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='no class sub-folders'):
        data.ImageFolderDataset(str(tmp_path / 'empty'))
    root = write_image_folder(str(tmp_path / 'imgs'), *digits30)
    os.mkdir(os.path.join(root, '99'))
    with pytest.raises(DataError, match=r'class folder .*99 has no images'):
        data.ImageFolderDataset(root)
    with pytest.raises(DataError, match='no index'):
        rec = write_recordio(str(tmp_path / 'r'), *digits30)
        os.remove(str(tmp_path / 'r.idx'))
        data.RecordDataset(rec)
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(DataError, match='neither a directory nor a .rec'):
        data.open_dataset(str(tmp_path / 'x.txt'))
    with pytest.raises(DataError, match='unknown split'):
        data.open_dataset('digits', 'test')
    with pytest.raises(ValueError, match='not sorted'):
        write_image_folder(str(tmp_path / 'w'), *digits30, classes=list('9876543210'))


# --- open_dataset -------------------------------------------------------------------------------

def test_open_dataset_splits_a_folder_and_a_rec_like_the_labels(folder, tmp_path, digits30):
    rec = write_recordio(str(tmp_path / 'd'), *digits30, img_fmt='.png')
    for spec in (folder, rec):
        whole = data.open_dataset(spec, 'all')
        train, val = data.open_dataset(spec, 'train'), data.open_dataset(spec, 'val')
        assert (len(train), len(val), len(whole)) == (20, 10, 30)
        assert np.array_equal(np.bincount(val.labels), np.ones(10))  # round(0.2 * 3) = 1 per class
        keep = data.split_indices(whole.labels, 'val', seed=0)
        assert all(np.array_equal(val[i][0], whole[int(j)][0]) for i, j in enumerate(keep))
    digits = data.open_dataset('digits', 'val', input_size=16)
    assert isinstance(digits, data.DigitsDataset) and digits[0][0].shape == (16, 16, 3)


def test_open_dataset_uses_presplit_layouts(tmp_path, digits30):
    images, labels = digits30
    root = tmp_path / 'imagenet'
    write_image_folder(str(root / 'train'), images[:20], labels[:20])
    write_image_folder(str(root / 'val'), images[20:], labels[20:])
    assert len(data.open_dataset(str(root), 'train')) == 20
    assert len(data.open_dataset(str(root), 'val')) == 10
    with pytest.raises(DataError, match="split 'train' or 'val'"):
        data.open_dataset(str(root), 'all')
    rec = write_recordio(str(tmp_path / 'set_train'), images[:20], labels[:20])
    write_recordio(str(tmp_path / 'set_val'), images[20:], labels[20:])
    assert len(data.open_dataset(rec, 'train')) == 20 and len(data.open_dataset(rec, 'val')) == 10


# --- transforms -------------------------------------------------------------------------------

def test_eval_transform_resizes_crops_and_normalises():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 0] = 200
    img[10:30, 20:40] = 255  # centred block, survives the centre crop
    out = data.eval_transform(img, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    expected = (np.array([255, 255, 255], np.float32) - data.MEAN_RGB) / data.STD_RGB
    assert np.allclose(out[:, 16, 16], expected, atol=1e-5)
    assert np.allclose(out[1, 0, 0], -data.MEAN_RGB[1] / data.STD_RGB[1], atol=1e-5)


def test_crop_box_honours_area_and_aspect_ranges():
    rng = np.random.default_rng(0)
    for _ in range(300):
        y0, x0, h, w = _crop_box(100, 120, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= y0 and y0 + h <= 100 and 0 <= x0 and x0 + w <= 120
        assert 0.08 - 0.01 <= h * w / 12000 <= 1.0 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_train_transform_is_seeded_and_flips_only_in_imagenet_profile():
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8)[None, :, None], (48, 1, 3))

    def slope(augment, seed):
        out = data.train_transform(ramp, 32, np.random.default_rng(seed), augment)
        assert out.shape == (3, 32, 32) and out.dtype == np.float32
        return np.sign(np.diff(out[0].mean(axis=0)).mean())

    a = data.train_transform(ramp, 32, np.random.default_rng(7), 'imagenet')
    assert np.array_equal(a, data.train_transform(ramp, 32, np.random.default_rng(7), 'imagenet'))
    assert not np.allclose(a, data.train_transform(ramp, 32, np.random.default_rng(8), 'imagenet'))
    flips = [slope('imagenet', s) for s in range(40)]
    assert 8 <= flips.count(-1) <= 32
    assert all(slope('light', s) > 0 for s in range(40))
    plain = data.train_transform(ramp, 32, None, 'none')
    assert np.array_equal(plain, data.eval_transform(ramp, 32))
    with pytest.raises(DataError, match='unknown augmentation'):
        data.train_transform(ramp, 32, np.random.default_rng(0), 'heavy')


# --- loaders ----------------------------------------------------------------------------------

def test_loader_batches_and_last_batch_policy():
    dataset = data.DigitsDataset('val')  # 359 images
    train = data.make_loader(dataset, 64, train=True, input_size=32)
    batches = list(train)
    assert len(batches) == len(train) == 5 and train.epoch == 1
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == np.float32 and y.shape == (64,)
    assert -3 < x.asnumpy().min() and x.asnumpy().max() < 3
    evaluate = data.make_loader(dataset, 64, train=False, input_size=32)
    sizes = [b[0].shape[0] for b in evaluate]
    assert sizes == [64] * 5 + [39]
    first = next(iter(evaluate))[1].asnumpy()
    assert np.array_equal(first, dataset.labels[:64])  # eval keeps the dataset order


def test_loader_epochs_are_a_function_of_seed_and_epoch():
    dataset = data.DigitsDataset('val')

    def epoch_batch(loader):
        x, y = next(iter(loader))
        return x.asnumpy(), y.asnumpy()

    a = data.make_loader(dataset, 32, train=True, seed=3)
    e0 = epoch_batch(a)
    list(a)  # epoch 0 completed: a.epoch == 1
    e1 = epoch_batch(a)
    assert not np.array_equal(e0[1], e1[1])
    b = data.make_loader(dataset, 32, train=True, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(e0, epoch_batch(b)))
    b.epoch = 1  # resume
    assert all(np.array_equal(u, v) for u, v in zip(e1, epoch_batch(b)))
    c = data.make_loader(dataset, 32, train=True, seed=4)
    assert not np.array_equal(e0[0], epoch_batch(c)[0])
    ordered = data.make_loader(dataset, 32, train=True, shuffle=False, seed=3)
    o0 = epoch_batch(ordered)
    ordered.epoch = 1  # same images, fresh augmentation
    o1 = epoch_batch(ordered)
    assert np.array_equal(o0[1], o1[1]) and not np.allclose(o0[0], o1[0])


def test_worker_processes_give_the_same_batches(tmp_path, digits30):
    dataset = data.RecordDataset(write_recordio(str(tmp_path / 'd'), *digits30))
    same = [[b[0].asnumpy() for b in data.make_loader(dataset, 8, True, seed=1, num_workers=n)]
            for n in (0, 2)]
    assert len(same[0]) == 3 and all(np.array_equal(u, v) for u, v in zip(*same))


def test_calibration_batches_match_the_ndarray_iter():
    digits = data.DigitsDataset('val')
    dataset = digits.subset(np.argsort(digits.labels, kind='stable'))  # class-major, as folders
    batches = data.calibration_batches(dataset, 16, 3)
    assert len(batches) == 3 and all(b.shape == (16, 3, 32, 32) and b.dtype == np.float32
                                     for b in batches)
    it = data.to_ndarray_iter(dataset, 16, 3)
    assert it.provide_data[0].shape == (16, 3, 32, 32)
    from_iter = [batch.data[0].asnumpy() for batch in it]
    assert len(from_iter) == 3 and all(np.array_equal(u, v) for u, v in zip(batches, from_iter))
    it.reset()
    assert len(set(next(it).label[0].asnumpy())) > 1  # a seeded sample, not the first class
    assert len(data.calibration_batches(dataset, 100, 10)) == 3  # 359 images: 3 full batches
    with pytest.raises(DataError, match='fewer than one batch'):
        data.calibration_batches(dataset, 400, 1)
