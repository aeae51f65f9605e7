"""FLOPs/params by graph walking (SPEC §6.1): hand counts, SPEC §8 figures, gluoncv, ONNX."""
import pytest
from mxnet.gluon import HybridBlock, nn

from nas.counting import count_net, count_onnx
from nas.trace_mxnet import trace_net
from nas.errors import ArchError, OneShotError, ProfilingError
from nas.space import Arch, SearchSpace

SE_PLUS = SearchSpace(use_se=True, last_conv_after_pooling=True)


class TinyNet(HybridBlock):
    """Every op kind the OneShot network uses, plus a grouped conv, a fix_gamma BN and a Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.stem = nn.Conv2D(8, 3, strides=2, padding=1, use_bias=False, in_channels=3)
            self.bn = nn.BatchNorm(in_channels=8)
            self.group = nn.Conv2D(8, 1, groups=2, use_bias=False, in_channels=8)
            self.bn_fixed = nn.BatchNorm(in_channels=8, scale=False)  # fix_gamma=True
            self.dw = nn.Conv2D(4, 3, padding=1, groups=4, use_bias=False, in_channels=4)
            self.reduce = nn.Conv2D(2, 1, in_channels=4)
            self.expand = nn.Conv2D(4, 1, in_channels=2)
            self.fc = nn.Dense(10, in_units=8)

    def hybrid_forward(self, F, x):
        x = self.bn(self.stem(x))
        x = x * F.hard_sigmoid(x, alpha=1.0 / 6, beta=0.5)  # hard-swish
        x = F.relu(self.bn_fixed(self.group(x)))
        y = F.reshape_like(F.swapaxes(F.reshape(x, shape=(0, 2, 4, -1)), 1, 2), x)  # shuffle
        a = F.slice_axis(y, axis=1, begin=0, end=4)
        b = F.relu(self.dw(F.slice_axis(y, axis=1, begin=4, end=8)))
        w = F.Pooling(b, kernel=(1, 1), global_pool=True, pool_type='avg')  # SE
        w = F.hard_sigmoid(self.expand(F.relu(self.reduce(w))), alpha=1.0 / 6, beta=0.5)
        x = F.concat(a, F.broadcast_mul(b, w), dim=1)
        x = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type='avg')
        return self.fc(F.Dropout(F.flatten(x), p=0.1))


# (op, FLOPs, params) by hand for a 3x16x16 input; everything else counts 0
TINY_ROWS = [
    ('Convolution', 8 * 8 * 8 * 3 * 9, 8 * 3 * 9),       # stem, 8x8x8 out, C_in*k^2 = 27
    ('BatchNorm', 0, 2 * 8),                             # gamma + beta, no running stats
    ('Convolution', 8 * 8 * 8 * 4, 8 * 4),               # groups 2: C_in/groups = 4
    ('BatchNorm', 0, 2 * 8),                             # fix_gamma: gamma still counted
    ('Convolution', 4 * 8 * 8 * 9, 4 * 9),               # depthwise 3x3
    ('Pooling', 4 * 8 * 8, 0),                           # GAP adds C*H*W
    ('Convolution', 2 * 4 + 2, 2 * 4 + 2),               # SE reduce with bias
    ('Convolution', 4 * 2 + 4, 4 * 2 + 4),               # SE expand with bias
    ('Pooling', 8 * 8 * 8, 0),
    ('FullyConnected', 10 * 8 + 10, 10 * 8 + 10),        # classifier with bias
]
TINY_SHAPE = (3, 16, 16)


@pytest.fixture
def tiny_net():
    net = TinyNet()
    net.initialize()
    return net


def test_tiny_net_matches_hand_count(tiny_net):
    report = count_net(tiny_net, TINY_SHAPE)
    assert [(r.op_type, r.flops, r.params) for r in report.layers] == TINY_ROWS
    assert report.flops == sum(r[1] for r in TINY_ROWS) == 19056
    assert report.params == sum(r[2] for r in TINY_ROWS) == 428
    assert report.layers[0].out_shape == (1, 8, 8, 8)


def test_counts_are_per_image_and_need_no_weights():
    net = TinyNet()  # never initialised: the symbol alone has every shape
    assert count_net(net, (4,) + TINY_SHAPE) == count_net(net, TINY_SHAPE)
    assert count_net(net, TINY_SHAPE).flops == 19056


def test_fix_gamma_does_not_change_the_count():
    """gamma and beta count whatever BatchNorm's scale/center flags say (SPEC §6.1)."""
    def bn_params(**flags):
        net = nn.HybridSequential()
        net.add(nn.Conv2D(4, 1, in_channels=3, use_bias=False),
                nn.BatchNorm(in_channels=4, **flags))
        return count_net(net, (3, 8, 8)).params
    assert bn_params() == bn_params(scale=False) == bn_params(scale=False, center=False) == 12 + 8


def test_wrong_input_shape_is_an_arch_error(tiny_net):
    with pytest.raises(ArchError, match='does not fit'):
        count_net(tiny_net, (4, 16, 16))
    with pytest.raises(ArchError, match='input shape'):
        count_net(tiny_net, 224)


def test_weighted_op_without_a_rule_is_refused():
    net = nn.HybridSequential()
    net.add(nn.Conv2DTranspose(4, 3, in_channels=3))
    with pytest.raises(ProfilingError, match='Deconvolution'):
        count_net(net, (3, 8, 8))


def test_plain_block_is_refused():
    with pytest.raises(ProfilingError, match='HybridBlock'):
        count_net(nn.Sequential(), TINY_SHAPE)


# -- SPEC §8 [verified] figures ----------------------------------------------------------------

@pytest.mark.parametrize('name, flops, params', [
    ('oneshot_s_plus', 291475944, 3541829),
    ('oneshot_plus', 297058024, 3742955),
    ('oneshot', 327909096, 3433579),
])
def test_zoo_models_match_spec(name, flops, params):
    import zoo
    report = count_net(zoo.get_model(name), (3, 224, 224))
    assert (report.flops, report.params) == (flops, params)


@pytest.mark.parametrize('blocks, scales, space, flops, params', [
    ('23332333233333332333', '9' * 20, SE_PLUS, 849514600, 6986392),   # max-FLOPs path
    ('3' * 20, '9' * 20, SE_PLUS, 811045288, 7479880),                  # max-params path
    ('30003000300000003000', '0' * 20, SE_PLUS, 64162984, 2416402),     # min-FLOPs path
    ('0' * 20, '0' * 20, SE_PLUS, 71087272, 2403296),                   # min-params path
    ('3' * 20, '9' * 20, SearchSpace(), 841896360, 7170504),            # all SXB, plain
])
def test_extreme_paths_match_spec(blocks, scales, space, flops, params):
    from nas.network import OneShotNet
    net = OneShotNet(Arch.parse('%s:%s' % (blocks, scales), space))
    report = count_net(net, (3, 224, 224))
    assert (report.flops, report.params) == (flops, params)


def test_zoo_graph_has_the_expected_ops():
    """OneShot-S+: 16 stride-1 units, each with one channel shuffle; the 24 SE convs and the
    after-pooling conv and classifier carry biases."""
    import zoo
    ops = trace_net(zoo.get_model('oneshot_s_plus'), (3, 224, 224))
    kinds = [op.kind for op in ops]
    assert kinds.count('shuffle') == 16
    assert sum(1 for op in ops if op.kind == 'conv' and op.bias_params) == 24 + 2


# -- gluoncv models vs their published figures --------------------------------------------------

@pytest.mark.parametrize('name, flops, params', [
    ('mobilenetv3_large', 217e6, 5.48e6),
    ('mobilenetv2_1.0', 300e6, 3.50e6),
])
def test_gluoncv_models_match_published_counts(name, flops, params):
    """MACs within 1 %, params within 2 %. The published param counts include BN gamma/beta:
    with them we are within 0.11 % (5,481,752 and 3,503,872), without them 0.4-0.9 % off."""
    from gluoncv.model_zoo import get_model
    report = count_net(get_model(name), (3, 224, 224))
    assert report.flops == pytest.approx(flops, rel=0.01)
    assert report.params == pytest.approx(params, rel=0.02)
    bn = sum(r.params for r in report.layers if r.op_type == 'BatchNorm')
    assert abs(report.params - params) < abs(report.params - bn - params)


# -- ONNX -------------------------------------------------------------------------------------

@pytest.fixture
def tiny_onnx(tiny_net, tmp_path):
    from export.onnx import export_onnx
    path = str(tmp_path / 'tiny.onnx')
    export_onnx(tiny_net, path, (1,) + TINY_SHAPE)
    return path


@pytest.mark.integration
def test_onnx_count_equals_mxnet_count(tiny_net, tiny_onnx):
    mxnet_rows = count_net(tiny_net, TINY_SHAPE).layers
    onnx_rows = count_onnx(tiny_onnx).layers
    assert [(r.flops, r.params, r.out_shape) for r in onnx_rows] == \
        [(r.flops, r.params, r.out_shape) for r in mxnet_rows]


@pytest.mark.integration
def test_onnx_count_of_a_random_subnet_equals_mxnet_count(tiny_arch, tmp_path):
    from export.onnx import export_onnx
    from nas.network import OneShotNet
    net = OneShotNet(tiny_arch)
    net.initialize()
    path = str(tmp_path / 'arch.onnx')
    export_onnx(net, path, (1, 3, 32, 32), opset=14)
    expected, report = count_net(net, (3, 32, 32)), count_onnx(path)
    assert (report.flops, report.params) == (expected.flops, expected.params)


@pytest.mark.integration
def test_bn_folded_onnx_counts_conv_initializers(tiny_net, tmp_path):
    """Folding removes gamma/beta and gives each folded conv a bias (SPEC §7): params drop by
    sum(C) over BNs, FLOPs grow by one add per folded conv output."""
    from export.merge_bn import merge_bn
    from export.onnx import export_onnx
    path = str(tmp_path / 'folded.onnx')
    export_onnx(merge_bn(tiny_net, (1,) + TINY_SHAPE), path, (1,) + TINY_SHAPE)
    report = count_onnx(path)
    assert 'BatchNormalization' not in {r.op_type for r in report.layers}
    assert report.params == 428 - 8 - 8
    assert report.flops == 19056 + 8 * 8 * 8 + 8 * 8 * 8


@pytest.mark.integration
def test_dynamic_spatial_dims_need_input_size(tiny_onnx, tmp_path):
    import onnx
    model = onnx.load(tiny_onnx)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ['N', None, 'H', 'W']):
        if name:
            dim.Clear()
            dim.dim_param = name
    path = str(tmp_path / 'dynamic.onnx')
    onnx.save(model, path)
    with pytest.raises(ArchError, match=r"dynamic dims \['\?', 3, '\?', '\?'\]; pass input_size"):
        count_onnx(path)
    assert count_onnx(path, input_size=16).flops == 19056
    assert count_onnx(model, input_size=(16, 16)).params == 428
    with pytest.raises(ArchError, match='does not match'):
        count_onnx(tiny_onnx, input_size=32)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / 'notes.onnx'
    path.write_text('this is not a protobuf\n')
    with pytest.raises(OneShotError, match='is not an ONNX model'):
        count_onnx(str(path))
    with pytest.raises(OneShotError, match='no ONNX file'):
        count_onnx(str(tmp_path / 'missing.onnx'))
