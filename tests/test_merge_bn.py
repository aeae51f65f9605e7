"""BatchNorm folding (SPEC §7): the numpy formula, then merged vs unmerged nets in eval mode."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from conftest import (assert_parity, digits_images, gluoncv_on_images, image_statistics,
                      randomize_bn)
from export.merge_bn import fold_bn, merge_bn, merge_bn_symbol
from export.mxnet_symbol import symbol_block, trace
from nas.errors import ExportError
from toy_nets import TOY_SHAPE, toy_net


def _bn(channels, rng):
    return (rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels),
            rng.normal(0, 0.5, channels), rng.uniform(0.2, 2.0, channels))


def _ops(block):
    nodes = json.loads(block(mx.sym.var('data')).tojson())['nodes']
    return [node['op'] for node in nodes]


def _assert_close(ref, out, rel=1e-5):
    assert_parity(ref, out, atol=1e-4, rel=rel)


def _learnable(net):
    """Parameters as SPEC §7 counts them: weights, biases, gamma, beta (no moving statistics)."""
    return sum(p.data().size for p in net.collect_params().values() if p.grad_req != 'null')


@pytest.mark.parametrize('with_bias', [False, True])
def test_fold_bn_equals_bn_of_linear_layer(with_bias):
    rng = np.random.default_rng(0)
    weight, x = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    bias = rng.normal(size=6) if with_bias else None
    gamma, beta, mean, var = _bn(6, rng)
    pre = x @ weight.T + (0 if bias is None else bias)
    expected = gamma * (pre - mean) / np.sqrt(var + 1e-3) + beta
    new_weight, new_bias = fold_bn(weight, bias, gamma, beta, mean, var, 1e-3)
    np.testing.assert_allclose(x @ new_weight.T + new_bias, expected, rtol=1e-12, atol=1e-12)


def test_fold_bn_scales_conv_weight_per_output_channel():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)  # a depthwise kernel
    gamma, beta, mean, var = _bn(4, rng)
    new_weight, new_bias = fold_bn(weight, None, gamma, beta, mean, var, 1e-5)
    scale = gamma / np.sqrt(var + 1e-5)
    assert new_weight.dtype == np.float32 and new_bias.dtype == np.float32
    np.testing.assert_allclose(new_weight, weight * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(new_bias, beta - scale * mean, rtol=1e-5, atol=1e-7)


def test_merge_toy_net_matches_and_removes_every_bn():
    net = toy_net()
    merged = merge_bn(net, TOY_SHAPE)
    x = mx.nd.random.normal(shape=(4,) + TOY_SHAPE[1:])
    _assert_close(net(x), merged(x))
    assert 'BatchNorm' not in _ops(merged) and _ops(net).count('BatchNorm') == 5
    # SPEC §7: -C per BN after a bias-free conv (gamma, beta out, bias in); -2C after the biased
    # depthwise conv (its bias absorbs the fold).
    bn_channels = [p.shape[0] for name, p in net.collect_params().items() if name.endswith('gamma')]
    assert _learnable(merged) == _learnable(net) - sum(bn_channels) - 8


def test_report_counts_and_parameter_names():
    sym, params = trace(toy_net(), TOY_SHAPE)
    new_sym, new_params, report = merge_bn_symbol(sym, params)
    assert len(report.folded) == 5 and report.kept == {}
    assert report.params_before - report.params_after == 16 + 8 + 2 * 8 + 8 + 32
    assert set(new_params) == set(new_sym.list_inputs()) - {'data'}
    bn_suffixes = ('gamma', 'beta', 'running_mean', 'running_var')
    assert not any(name.endswith(bn_suffixes) for name in new_params)


@pytest.mark.parametrize('name', ['mobilenetv3_small', 'mobilenetv3_large', 'mobilenetv2_1.0'])
def test_merge_gluoncv(name):
    net = gluoncv_on_images(name, 64)
    shape = (2, 3, 64, 64)
    # float64: through ~60 layers float32 rounding alone reaches 1e-5 relative; in float64
    # (folded in float64 too) any difference left is the folding's own error
    net.cast('float64')
    merged = merge_bn(net, shape, strict=True)
    x = mx.nd.array(digits_images(64, 2), dtype='float64')
    _assert_close(net(x), merged(x), rel=1e-10)
    assert 'BatchNorm' not in _ops(merged)
    bn_channels = sum(p.shape[0] for n, p in net.collect_params().items() if n.endswith('gamma'))
    assert _learnable(merged) == _learnable(net) - bn_channels  # convs before BNs are bias-free


class _Unfoldable(nn.HybridBlock):
    """BN after a concat, BN after a conv whose output is also read elsewhere, one foldable BN."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv_a, self.conv_b = nn.Conv2D(4, 3, padding=1), nn.Conv2D(4, 1, use_bias=False)
            self.bn_cat, self.bn_shared, self.bn_ok = nn.BatchNorm(), nn.BatchNorm(), nn.BatchNorm()

    def hybrid_forward(self, F, x):
        a = self.conv_a(x)
        shared = self.bn_shared(a) + a
        cat = self.bn_cat(F.concat(shared, x, dim=1))
        return self.bn_ok(self.conv_b(cat))


def test_unfoldable_bns_are_kept_and_reported():
    net = _Unfoldable(prefix='u_')
    net.initialize()
    net(mx.nd.zeros((1, 4, 8, 8)))
    randomize_bn(net, seed=2)
    sym, params = trace(net, (1, 4, 8, 8))
    _, _, report = merge_bn_symbol(sym, params)
    assert report.folded == {'u_batchnorm2_fwd': 'u_conv1_fwd'}
    assert set(report.kept) == {'u_batchnorm0_fwd', 'u_batchnorm1_fwd'}
    assert 'Concat' in report.kept['u_batchnorm0_fwd']
    assert 'other' in report.kept['u_batchnorm1_fwd']
    merged = merge_bn(net, (1, 4, 8, 8))
    x = mx.nd.random.normal(shape=(2, 4, 8, 8))
    _assert_close(net(x), merged(x))
    assert _ops(merged).count('BatchNorm') == 2
    with pytest.raises(ExportError, match='2 BatchNorm.*u_batchnorm0_fwd'):
        merge_bn(net, (1, 4, 8, 8), strict=True)


def test_fix_gamma_and_each_bn_eps_are_respected():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, use_bias=False), nn.BatchNorm(scale=False, epsilon=0.5),
            nn.Dense(5, use_bias=False), nn.BatchNorm(epsilon=0.25))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 6, 6)))
    randomize_bn(net, seed=3)
    sym, params = trace(net, (1, 3, 6, 6))
    params[net[1].gamma.name] = mx.nd.full((6,), 3.0)  # fix_gamma: the operator ignores it
    new_sym, new_params, report = merge_bn_symbol(sym, params)
    assert report.kept == {}
    merged = symbol_block(new_sym, new_params)
    x = mx.nd.random.normal(shape=(3, 3, 6, 6))
    _assert_close(net(x), merged(x))


def test_symbol_without_optional_attributes_uses_operator_defaults():
    """A hand-built symbol omits layout, eps and fix_gamma: the op defaults (1e-3, True) apply."""
    data = mx.sym.var('data')
    conv = mx.sym.Convolution(data, kernel=(3, 3), num_filter=4, num_group=2, no_bias=True,
                              name='c')
    sym = mx.sym.BatchNorm(conv, name='bn')
    rng = np.random.default_rng(5)
    gamma, beta, mean, var = _bn(4, rng)
    params = {'c_weight': rng.normal(size=(4, 1, 3, 3)), 'bn_gamma': gamma, 'bn_beta': beta,
              'bn_moving_mean': mean, 'bn_moving_var': var}
    params = {name: mx.nd.array(value) for name, value in params.items()}
    new_sym, new_params, report = merge_bn_symbol(sym, params)
    assert report.folded == {'bn': 'c'} and 'BatchNorm' not in new_sym.tojson()
    x = mx.nd.random.normal(shape=(2, 2, 5, 5))
    _assert_close(symbol_block(sym, params)(x), symbol_block(new_sym, new_params)(x))


def test_use_global_stats_bn_matches_in_train_mode_too():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, use_bias=False), nn.BatchNorm(use_global_stats=True))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 6, 6)))
    randomize_bn(net, seed=4)
    merged = merge_bn(net, (1, 3, 6, 6))
    x = mx.nd.random.normal(shape=(3, 3, 6, 6))
    with mx.autograd.record(train_mode=True):
        ref, out = net(x), merged(x)
    _assert_close(ref, out)


def test_merge_rejects_a_net_that_cannot_run_on_the_shape():
    net = toy_net()
    with pytest.raises(ExportError, match='input of shape'):
        merge_bn(net, (1, 5, 32, 32))


@pytest.mark.integration
def test_merge_oneshot_subnet(tiny_arch):
    from nas.network import OneShotNet
    net = OneShotNet(tiny_arch)
    net.initialize()
    shape = (2, 3, 32, 32)
    net(mx.nd.zeros(shape))
    image_statistics(net, digits_images(32, 64, offset=100), seed=5)
    merged = merge_bn(net, shape, strict=True)
    x = mx.nd.array(digits_images(32, 2))
    _assert_close(net(x), merged(x))
    assert 'BatchNorm' not in _ops(merged)
    bn_channels = sum(p.shape[0] for n, p in net.collect_params().items() if n.endswith('gamma'))
    assert _learnable(merged) == _learnable(net) - bn_channels  # SPEC §7, bias-free convs
