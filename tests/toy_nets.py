"""A small HybridBlock built from the network's own blocks (hard-swish, the channel shuffle and
split of nas.blocks), so that the export tests follow any change to them."""
import mxnet as mx
from mxnet.gluon import nn

from nas.blocks import ChannelShuffleSplit, HardSwish as HSwish

TOY_SHAPE = (1, 3, 32, 32)
TOY_HSWISH_SITES = 3  # stem, unit, tail
TOY_HSIGMOID_SITES = 1  # SE gate


class ToyNet(nn.HybridBlock):
    """Stem, a stride-1 shuffle unit (1x1, biased depthwise, grouped 1x1, SE), tail, classifier."""

    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.stem = nn.HybridSequential()
            self.stem.add(nn.Conv2D(16, 3, 2, 1, use_bias=False), nn.BatchNorm(epsilon=1e-5),
                          HSwish())
            self.shuffle = ChannelShuffleSplit(16)  # SPEC §1.4 reference order
            self.main = nn.HybridSequential()
            self.main.add(nn.Conv2D(8, 1, use_bias=False), nn.BatchNorm(), nn.Activation('relu'),
                          nn.Conv2D(8, 3, 1, 1, groups=8, use_bias=True), nn.BatchNorm(),
                          nn.Conv2D(8, 1, groups=2, use_bias=False), nn.BatchNorm(epsilon=1e-3),
                          HSwish())
            self.se_reduce = nn.Conv2D(4, 1)
            self.se_expand = nn.Conv2D(8, 1)
            self.tail = nn.HybridSequential()
            self.tail.add(nn.Conv2D(32, 1, use_bias=False), nn.BatchNorm(), HSwish())
            self.dropout = nn.Dropout(0.2)
            self.output = nn.Conv2D(classes, 1)

    def hybrid_forward(self, F, x):
        keep, y = self.shuffle(self.stem(x))
        y = self.main(y)
        gate = F.Pooling(y, kernel=(1, 1), global_pool=True, pool_type='avg')
        gate = F.hard_sigmoid(self.se_expand(F.relu(self.se_reduce(gate))), alpha=1.0 / 6, beta=0.5)
        x = F.concat(keep, F.broadcast_mul(y, gate), dim=1)
        x = F.Pooling(self.tail(x), kernel=(1, 1), global_pool=True, pool_type='avg')
        return F.Flatten(self.output(self.dropout(x)))


def toy_net(seed=0):
    """An initialised ToyNet with non-trivial weights, biases and BN statistics."""
    from conftest import randomize_bn
    mx.random.seed(seed)
    net = ToyNet()
    net.initialize(mx.init.Xavier(magnitude=3))
    net(mx.nd.zeros(TOY_SHAPE))
    for name, param in net.collect_params().items():
        if name.endswith('bias'):  # zero-initialised biases would hide a dropped bias
            param.set_data(mx.nd.random.normal(0, 0.2, shape=param.shape))
    return randomize_bn(net, seed)
