"""``OneShotNet``: the one network class. Given an ``Arch`` it is a fixed subnet; without one it is
the supernet over a ``SearchSpace`` (SPEC §2)."""
import mxnet as mx
import numpy as np
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .blocks import ConvBN, SE, ShuffleUnit, make_activation
from .errors import ArchError
from .space import (Arch, SearchSpace, NUM_BLOCKS, NUM_POSITIONS, LAST_CONV_CHANNELS,
                    STEM_CHANNELS, ceil8, mid_channels)

__all__ = ['OneShotNet', 'ChoiceBlock', 'channel_mask']


class ChoiceBlock(HybridBlock):
    """A supernet position: all four choice blocks at full width, run one at a time
    (imperatively: the choice is a Python int)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.choices = nn.HybridSequential()
            self.choices.add(*units)

    def forward(self, x, choice, mask=None):
        return self.choices[choice](x, mask) if mask is not None else self.choices[choice](x)


class _Tail(HybridBlock):
    """The three tail variants of SPEC §1.6 (everything between stage 4 and dropout)."""

    def __init__(self, space, in_channels, **kwargs):
        super().__init__(**kwargs)
        act = 'hswish' if space.use_se else 'relu'
        self.after_pooling = space.last_conv_after_pooling
        with self.name_scope():
            if space.last_conv_after_pooling:
                self.last_conv = nn.Conv2D(LAST_CONV_CHANNELS, 1, in_channels=in_channels,
                                           weight_initializer=mx.init.Normal(0.01))
                self.act = make_activation(act)
            elif space.use_se:
                width = ceil8(0.75 * LAST_CONV_CHANNELS)
                self.conv_bn = ConvBN(in_channels, width, 1, act='hswish')
                self.se = SE(width)
                self.last_conv = nn.Conv2D(LAST_CONV_CHANNELS, 1, in_channels=width,
                                           weight_initializer=mx.init.Normal(0.01))
                self.act = make_activation('hswish')
            else:
                self.conv_bn = ConvBN(in_channels, LAST_CONV_CHANNELS, 1, act='relu')

    def hybrid_forward(self, F, x):
        def pool(y):
            return F.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg')
        if self.after_pooling:
            return self.act(self.last_conv(pool(x)))
        x = pool(self.conv_bn(x))
        if hasattr(self, 'se'):
            x = self.act(self.last_conv(self.se(x)))
        return x


class OneShotNet(HybridBlock):
    """SPOS network. ``OneShotNet(arch)`` is a fixed subnet (physically narrow layers);
    ``OneShotNet(space=SearchSpace(...))`` is the supernet, called as ``net(x, blocks, mask)``.
    """

    def __init__(self, arch=None, space=None, shuffle='reference', **kwargs):
        super().__init__(**kwargs)
        if arch is not None and not isinstance(arch, Arch):
            raise ArchError('arch must be an nas.space.Arch, got %s' % type(arch).__name__)
        self.arch = arch
        self.use_all_blocks = False
        self.space = arch.space if arch is not None else (space or SearchSpace())
        space = self.space
        stem_act = 'hswish' if space.use_se else 'relu'
        with self.name_scope():
            self.stem = ConvBN(3, STEM_CHANNELS, 3, 2, act=stem_act)
            self.stem.conv.weight.init = mx.init.Normal(0.01)
            self.units = nn.HybridSequential()
            for position, (stage, cin, cout, stride, _) in enumerate(space.position_layout()):
                def unit(choice, mid):
                    return ShuffleUnit(choice, cin, cout, mid, stride,
                                       act=space.position_activation(position),
                                       use_se=space.position_uses_se(position), shuffle=shuffle)
                if arch is not None:
                    self.units.add(unit(arch.blocks[position], arch.mid(position)))
                else:
                    self.units.add(ChoiceBlock([unit(b, cout) for b in range(NUM_BLOCKS)]))
            self.tail = _Tail(space, space.stage_channels[-1])
            self.dropout = nn.Dropout(0.2 if space.use_se else 0.1)
            self.output = nn.Conv2D(space.classes, 1, in_channels=LAST_CONV_CHANNELS,
                                    weight_initializer=mx.init.Normal(0.01))

    @property
    def is_supernet(self):
        return self.arch is None

    def _head(self, F, x):
        return F.flatten(self.output(self.dropout(self.tail(x))))

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = self.units(x)
        return self._head(F, x)

    def forward(self, x, blocks=None, mask=None):
        """Subnet: ``net(x)``. Supernet: ``net(x, blocks, mask)`` runs the chosen single path;
        ``mask`` is a (20, max_mid) 0/1 NDArray (see ``channel_mask``), None for all channels.
        With ``net.use_all_blocks = True`` (debug) all four blocks of each position run and
        their outputs are averaged."""
        if not self.is_supernet:
            if blocks is not None or mask is not None:
                raise ArchError('a fixed subnet takes no block choices or channel mask')
            return super().forward(x)
        if blocks is None:
            raise ArchError('the supernet needs a block-choice vector: net(x, blocks, mask)')
        blocks = Arch(tuple(blocks), (0,) * NUM_POSITIONS).blocks  # validates range and length
        x = self.stem(x)
        widths = [cout for _, _, cout, _, _ in self.space.position_layout()]
        for position, choice_block in enumerate(self.units):
            row = None
            if mask is not None:
                row = mask[position, :widths[position]]
            if self.use_all_blocks:
                outs = [choice_block(x, b, row) for b in range(NUM_BLOCKS)]
                x = mx.nd.add_n(*outs) / NUM_BLOCKS
            else:
                x = choice_block(x, blocks[position], row)
        return self._head(mx.nd, x)


def channel_mask(space, channels, ctx=mx.cpu()):
    """The (20, max_mid) 0/1 mask whose row i keeps the leading mid(i) channels (SPEC §2.2)."""
    Arch((0,) * NUM_POSITIONS, tuple(channels), space)  # validates the vector
    mask = np.zeros((NUM_POSITIONS, space.max_mid), dtype='float32')
    for position, (stage, _, cout, _, _) in enumerate(space.position_layout()):
        mask[position, :mid_channels(cout, channels[position])] = 1
    return mx.nd.array(mask, ctx=ctx)
