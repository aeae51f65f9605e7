"""Small, seeded fixtures shared by the tests."""
import os
import signal
import time

os.environ.setdefault('MXNET_ENGINE_TYPE', 'ThreadedEnginePerDevice')
os.environ.setdefault('OMP_NUM_THREADS', '2')

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nas.space import Arch, SearchSpace  # noqa: E402

SE_PLUS = SearchSpace(use_se=True, last_conv_after_pooling=True)


def pytest_collection_modifyitems(items):
    """Slow tests first: the README runs the suite on two pytest-xdist workers, and a long test
    handed out last would leave the other one idle."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def randomize_bn(net, seed=0):
    """Give every BN non-trivial statistics and affine parameters (identity defaults hide bugs)."""
    rng = np.random.RandomState(seed)
    for name, param in net.collect_params().items():
        shape = param.shape
        if name.endswith('running_mean'):
            param.set_data(mx.nd.array(rng.randn(*shape) * 0.1))
        elif name.endswith('running_var'):
            param.set_data(mx.nd.array(rng.rand(*shape) + 0.5))
        elif name.endswith('gamma'):
            param.set_data(mx.nd.array(rng.rand(*shape) + 0.5))
        elif name.endswith('beta'):
            param.set_data(mx.nd.array(rng.randn(*shape) * 0.1))
    return net


def digits_images(size, count, offset=0):
    """Real images: the embedded digits' validation split, evaluation transform, NCHW float32."""
    from nas.data import eval_transform, load_digits
    images, _ = load_digits(size, 'val')
    return np.stack([eval_transform(img, size) for img in images[offset:offset + count]])


def image_statistics(net, images, seed=0, forward=None):
    """Random BN affine parameters, then BN statistics estimated on ``images``. With random
    statistics alone, activations shrink or blow up through 20 units and the output stops
    depending on the input; estimated ones keep every layer at unit scale. ``forward`` picks
    a supernet path (``nas.bn_recal.recalibrate_bn``)."""
    from nas.bn_recal import recalibrate_bn
    randomize_bn(net, seed)
    recalibrate_bn(net, [mx.nd.array(images)], forward=forward)
    return net


def digits_split(size, split):
    """The embedded digits' ``split``, evaluation transform: (NCHW float32 images, labels)."""
    from nas.data import eval_transform, load_digits
    images, labels = load_digits(size, split)
    return np.stack([eval_transform(img, size) for img in images]), labels


def train_on_digits(arch, epochs, seed=0):
    """A plain Gluon loop (NAG, cosine schedule with one warm-up epoch, batch 64) on the digits
    train split; returns the trained network, no longer hybridized (a static-shape graph would
    be rebuilt, slowly, for every other batch size the tests use)."""
    from nas.network import OneShotNet
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = OneShotNet(arch)
    net.initialize(mx.init.MSRAPrelu())
    net.hybridize(static_alloc=True, static_shape=True)
    images, labels = digits_split(arch.space.input_size, 'train')
    batch = 64
    steps = len(images) // batch
    schedule = mx.lr_scheduler.CosineScheduler(epochs * steps, base_lr=0.1, final_lr=0,
                                               warmup_steps=steps)
    trainer = mx.gluon.Trainer(net.collect_params(), 'nag',
                               {'lr_scheduler': schedule, 'momentum': 0.9, 'wd': 4e-5})
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for step in range(steps):
            pick = order[step * batch:(step + 1) * batch]
            with mx.autograd.record():
                value = loss(net(mx.nd.array(images[pick])), mx.nd.array(labels[pick]))
            value.backward()
            trainer.step(batch)
    net.hybridize(active=False)
    return net


def digits_top1(net, size):
    images, labels = digits_split(size, 'val')
    return float((net(mx.nd.array(images)).asnumpy().argmax(1) == labels).mean())


@pytest.fixture(scope='session')
def digits_net():
    """A small subnet with all four block types, SE and the efficient last conv at 32x32,
    trained for 4 epochs on the digits (once per session): INT8 and export checks on trained
    weights and real images, not a random network on noise."""
    parsed = Arch.parse('01230123012301230123:00000000000000000000')
    arch = Arch(parsed.blocks, parsed.channels, SE_PLUS.replace(input_size=32, classes=10))
    net = train_on_digits(arch, epochs=4)
    top1 = digits_top1(net, 32)
    assert top1 >= 0.85, 'the session digits network reached only %.3f held-out top-1' % top1
    return net


def gluoncv_on_images(name, size):
    """A gluoncv model with Xavier weights, random BN affine parameters and BN statistics
    estimated on real images (``image_statistics``)."""
    from gluoncv import model_zoo
    mx.random.seed(0)
    net = model_zoo.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, size, size)))
    return image_statistics(net, digits_images(size, 32, offset=100), seed=1)


def assert_parity(ref, out, atol=1e-4, rel=None):
    """Two paths agree, on outputs that can tell them apart: ``ref`` (a batch of at least two
    inputs) has a signal and depends on its input -- deep nets with random BN statistics lose
    both and then compare constants -- and ``out`` is within ``atol`` (and ``rel`` times the
    peak, when given)."""
    ref, out = (np.asarray(x.asnumpy() if hasattr(x, 'asnumpy') else x) for x in (ref, out))
    assert ref.shape == out.shape and ref.shape[0] >= 2, (ref.shape, out.shape)
    peak = np.abs(ref).max()
    assert peak > 1e-3, 'a vanishing signal (peak %g) cannot show a difference' % peak
    spread = np.abs(ref - ref[:1]).max()
    assert spread > 1e-3 * peak, 'the output does not depend on the input'
    diff = np.abs(ref - out).max()
    assert diff <= atol, 'max difference %g > %g' % (diff, atol)
    if rel is not None:
        assert diff / peak <= rel, 'max difference %g is %g of the peak > %g' % (
            diff, diff / peak, rel)


def kill_when(proc, ready, timeout):
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it ends first or ``timeout`` s
    pass. The process never outlives the call."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, 'the process ended before it could be killed'
            assert time.time() < deadline, 'not ready to be killed after %d s' % timeout
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def tiny_arch():
    """A seeded random subnet at 32x32 with 10 classes, SE + efficient last conv."""
    rng = np.random.RandomState(7)
    return Arch(tuple(rng.randint(0, 4, 20)), tuple(rng.randint(0, 10, 20)),
                SE_PLUS.replace(input_size=32, classes=10))


@pytest.fixture
def store_root(tmp_path):
    return str(tmp_path / 'models')
