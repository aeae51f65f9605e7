"""The building blocks of the search space (SPEC §1.2-1.7), implemented once.

A unit is built either at a fixed mid width (a subnet) or at the stage's full width; in the latter
case the caller may pass a channel mask that zeroes every mid channel past the active ones after
each BN over mid channels (SPEC §2.2), which makes a masked supernet path equal to the pruned subnet.
"""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .space import ceil8

__all__ = ['HardSwish', 'HardSigmoid', 'make_activation', 'ConvBN', 'SE', 'ChannelShuffleSplit',
           'ShuffleUnit', 'BN_BETA_INIT']

BN_BETA_INIT = 1e-4  # SPEC §3.1
SNB_KERNELS = {0: 3, 1: 5, 2: 7}
XCEPTION_CHOICE = 3


class HardSigmoid(HybridBlock):
    """clip(x + 3, 0, 6) / 6, as one op so that it exports to ONNX HardSigmoid."""

    def hybrid_forward(self, F, x):
        return F.hard_sigmoid(x, alpha=1.0 / 6, beta=0.5)


class HardSwish(HybridBlock):
    """x * hard_sigmoid(x): exports as HardSigmoid + Mul (opset 13) or one HardSwish (opset 14)."""

    def hybrid_forward(self, F, x):
        return x * F.hard_sigmoid(x, alpha=1.0 / 6, beta=0.5)


def make_activation(kind):
    if kind == 'relu':
        return nn.Activation('relu')
    if kind == 'hswish':
        return HardSwish()
    raise ValueError('unknown activation %r' % (kind,))


def _conv_weight_init(in_channels, groups):
    # SPEC §3.1: N(0, sigma = 1 / (C_in / groups)), so sigma = 1 for depthwise convs.
    return mx.init.Normal(1.0 / (in_channels // groups))


class ConvBN(HybridBlock):
    """Conv (no bias) -> BN -> [channel mask] -> [activation].

    The mask (a (C,) 0/1 vector, supernet paths only, which run imperatively) multiplies the BN's
    gamma and beta: masked channels leave the BN as exact zeros with zero gradients, as a mask on
    the output would give, without the cost of a broadcast multiply and its backward.
    """

    def __init__(self, in_channels, out_channels, kernel, stride=1, groups=1, act=None,
                 **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(out_channels, kernel, strides=stride, padding=kernel // 2,
                                  groups=groups, use_bias=False, in_channels=in_channels,
                                  weight_initializer=_conv_weight_init(in_channels, groups))
            self.bn = nn.BatchNorm(in_channels=out_channels, epsilon=1e-5, momentum=0.9,
                                   beta_initializer=mx.init.Constant(BN_BETA_INIT))
            self.act = make_activation(act) if act else None

    def hybrid_forward(self, F, x, mask=None):
        x = self.conv(x)
        if mask is None:
            x = self.bn(x)
        else:
            bn, ctx = self.bn, x.context
            x = F.BatchNorm(x, bn.gamma.data(ctx) * mask, bn.beta.data(ctx) * mask,
                            bn.running_mean.data(ctx), bn.running_var.data(ctx), **bn._kwargs)
        return self.act(x) if self.act is not None else x


class SE(HybridBlock):
    """Squeeze-excite with hard-sigmoid gate and biased 1x1 convs, reduction 4 (SPEC §1.6)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        reduced = ceil8(channels // 4)
        small_init = mx.init.Normal(0.01)
        with self.name_scope():
            self.reduce = nn.Conv2D(reduced, 1, in_channels=channels, weight_initializer=small_init)
            self.expand = nn.Conv2D(channels, 1, in_channels=reduced, weight_initializer=small_init)
            self.gate = HardSigmoid()

    def hybrid_forward(self, F, x):
        w = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type='avg')
        w = self.gate(self.expand(F.relu(self.reduce(w))))
        return F.broadcast_mul(x, w)


class ChannelShuffleSplit(HybridBlock):
    """Shuffle then split into (identity half, main half) for stride-1 units (SPEC §1.4).

    'reference' views channels as (2, C/2) and transposes; 'official' gives the identity half the
    even channels. Both use only explicit-shape Reshape/Transpose, which ONNX accepts (no -4).
    """

    def __init__(self, channels, mode='reference', **kwargs):
        super().__init__(**kwargs)
        if mode not in ('reference', 'official'):
            raise ValueError("shuffle must be 'reference' or 'official', got %r" % (mode,))
        self._channels = channels
        self._mode = mode

    def hybrid_forward(self, F, x):
        half = self._channels // 2
        groups = (0, 2, half, -1) if self._mode == 'reference' else (0, half, 2, -1)
        y = F.reshape_like(F.swapaxes(F.reshape(x, shape=groups), 1, 2), x)
        return (F.slice_axis(y, axis=1, begin=0, end=half),
                F.slice_axis(y, axis=1, begin=half, end=self._channels))


def _main_branch_layers(choice, in_channels, mid, out_channels, stride, act):
    """(ConvBN, masked) pairs of the main branch in op order (SPEC §1.3)."""
    if choice in SNB_KERNELS:
        k = SNB_KERNELS[choice]
        return [(ConvBN(in_channels, mid, 1, act=act), True),
                (ConvBN(mid, mid, k, stride, groups=mid), True),
                (ConvBN(mid, out_channels, 1, act=act), False)]
    if choice == XCEPTION_CHOICE:
        return [(ConvBN(in_channels, in_channels, 3, stride, groups=in_channels), False),
                (ConvBN(in_channels, mid, 1, act=act), True),
                (ConvBN(mid, mid, 3, groups=mid), True),
                (ConvBN(mid, mid, 1, act=act), True),
                (ConvBN(mid, mid, 3, groups=mid), True),
                (ConvBN(mid, out_channels, 1, act=act), False)]
    raise ValueError('block choice %r is out of range 0..3' % (choice,))


class ShuffleUnit(HybridBlock):
    """One searchable unit: [projection branch, main branch] concatenated (SPEC §1.2).

    ``mid`` is the unit's physical mid width: the chosen width in a subnet, the stage width in a
    supernet (which then passes a (mid,) 0/1 mask to select the active channels).
    """

    def __init__(self, choice, in_channels, out_channels, mid, stride, act='relu',
                 use_se=False, shuffle='reference', **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        if stride == 1:
            main_in, main_out = out_channels // 2, out_channels - out_channels // 2
        else:
            main_in, main_out = in_channels, out_channels - in_channels
        kernel = SNB_KERNELS.get(choice, 3)
        with self.name_scope():
            if stride == 1:
                self.split = ChannelShuffleSplit(in_channels, shuffle)
            else:
                self.proj = nn.HybridSequential()
                self.proj.add(ConvBN(in_channels, in_channels, kernel, stride, groups=in_channels),
                              ConvBN(in_channels, in_channels, 1, act=act))
            layers = _main_branch_layers(choice, main_in, mid, main_out, stride, act)
            self.main = nn.HybridSequential()
            self.main.add(*[layer for layer, _ in layers])
            self._masked = [masked for _, masked in layers]
            self.se = SE(main_out) if use_se else None

    def hybrid_forward(self, F, x, mask=None):
        if self.stride == 1:
            proj, x = self.split(x)
        else:
            proj = self.proj(x)
        for layer, masked in zip(self.main, self._masked):
            x = layer(x, mask) if (masked and mask is not None) else layer(x)
        if self.se is not None:
            x = self.se(x)
        return F.concat(proj, x, dim=1)
