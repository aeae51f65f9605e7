"""Small, seeded fixtures shared by the tests."""
import os

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


@pytest.fixture
def tiny_arch():
    """A seeded random subnet at 32x32 with 10 classes, SE + efficient last conv."""
    rng = np.random.RandomState(7)
    return Arch(tuple(rng.randint(0, 4, 20)), tuple(rng.randint(0, 10, 20)),
                SE_PLUS.replace(input_size=32, classes=10))


@pytest.fixture
def store_root(tmp_path):
    return str(tmp_path / 'models')
