import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from nas.bn_recal import recalibrate_bn
from nas.errors import TrainingError
from nas.network import OneShotNet, channel_mask


def _conv_bn():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, in_channels=3), nn.BatchNorm(in_channels=4))
    net.initialize(mx.init.Xavier())
    return net


@pytest.mark.parametrize('hybridize', [False, True])
def test_cumulative_average_equals_mean_of_batch_statistics(hybridize):
    net = _conv_bn()
    if hybridize:
        net.hybridize()
    rng = np.random.RandomState(0)
    batches = [mx.nd.array(rng.randn(8, 3, 6, 6) * (k + 1) + k) for k in range(5)]
    recalibrate_bn(net, batches)
    conv_outs = [net[0](b).asnumpy() for b in batches]
    mean = np.mean([o.mean(axis=(0, 2, 3)) for o in conv_outs], axis=0)
    var = np.mean([o.var(axis=(0, 2, 3)) for o in conv_outs], axis=0)  # biased
    bn = net[1]
    np.testing.assert_allclose(bn.running_mean.data().asnumpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.data().asnumpy(), var, rtol=1e-4, atol=1e-5)
    assert bn._kwargs['momentum'] == 0.9  # restored


def test_ema_mode_weights_the_last_batch():
    net = _conv_bn()
    rng = np.random.RandomState(1)
    batches = [mx.nd.array(rng.randn(8, 3, 6, 6) + 10 * k) for k in range(3)]
    recalibrate_bn(net, batches, mode='ema')
    last = net[0](batches[-1]).asnumpy().mean(axis=(0, 2, 3))
    cumulative = np.mean([net[0](b).asnumpy().mean(axis=(0, 2, 3)) for b in batches], axis=0)
    got = net[1].running_mean.data().asnumpy()
    assert not np.allclose(got, cumulative, rtol=1e-2)
    assert np.all(np.sign(got) == np.sign(last))


@pytest.mark.parametrize('mode', ['cumulative', 'ema'])
def test_supernet_path_recalibration_changes_only_path(tiny_arch, mode):
    supernet = OneShotNet(space=tiny_arch.space)
    supernet.initialize()
    mask = channel_mask(tiny_arch.space, tiny_arch.channels)
    unused = supernet.units[0].choices[(tiny_arch.blocks[0] + 1) % 4].main[0].bn
    unused.running_mean.set_data(mx.nd.ones(unused.running_mean.shape) * 3)
    unused.running_var.set_data(mx.nd.ones(unused.running_var.shape) * 2)
    used = supernet.units[0].choices[tiny_arch.blocks[0]].main[0].bn
    used.running_mean.set_data(mx.nd.ones(used.running_mean.shape) * 3)
    batches = [mx.nd.random.uniform(shape=(4, 3, 32, 32)) for _ in range(2)]
    recalibrate_bn(supernet, batches, lambda x: supernet(x, tiny_arch.blocks, mask), mode=mode)
    assert not np.any(used.running_mean.data().asnumpy() == 3)
    # off the path: the statistics it had, not a reset
    assert np.all(unused.running_mean.data().asnumpy() == 3)
    assert np.all(unused.running_var.data().asnumpy() == 2)


def test_needs_batches():
    with pytest.raises(TrainingError, match='at least one batch'):
        recalibrate_bn(_conv_bn(), [])
