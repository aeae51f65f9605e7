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


def gluoncv_on_images(name, size):
    """A gluoncv model (skips without gluoncv) with Xavier weights, random BN affine parameters
    and BN statistics estimated on real images (``image_statistics``)."""
    model_zoo = pytest.importorskip('gluoncv.model_zoo')
    mx.random.seed(0)
    net = model_zoo.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, size, size)))
    return image_statistics(net, digits_images(size, 32, offset=100), seed=1)


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
