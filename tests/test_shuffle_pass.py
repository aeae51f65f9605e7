"""Deployment-graph passes: shuffle recognition, Gather and Slice forms, channel padding; every
form against MXNet on real images (the embedded digits), at a fixed and a dynamic batch."""
import collections

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import SE_PLUS, assert_parity, digits_images, image_statistics, randomize_bn
from export.merge_bn import merge_bn
from export.onnx import export_onnx
from export.shuffle import find_channel_shuffles, pad_channels, shuffle_to_gather
from nas.data import load_digits, normalize
from nas.errors import ExportError
from nas.network import OneShotNet
from nas.space import Arch
from toy_nets import TOY_SHAPE, toy_net

SIZE = 32


def _images(size, count):
    images, _ = load_digits(size, 'val')
    return np.stack([normalize(img) for img in images[:count]]).astype(np.float32)


def _realistic(net, seed):
    """Weights that keep activations O(1) and logits O(1..10): a meaningful 1e-4 comparison."""
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2),
                   force_reinit=True)
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    image_statistics(net, digits_images(SIZE, 64, offset=100), seed)  # input-dependent logits
    return _scaled_output(net)


def _zoo_net(name):
    import zoo
    return _realistic(zoo.get_model(name, input_size=SIZE, classes=10), seed=1)


def _supernet_subnet():
    """A supernet with trained-looking weights and its path fixed by extract_subnet."""
    from nas.subnet import extract_subnet
    space = SE_PLUS.replace(input_size=SIZE, classes=10)
    supernet = OneShotNet(space=space)
    supernet.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2))
    arch = Arch.parse('32103210321032103210:98765432109876543210', space)
    supernet(mx.nd.zeros((1, 3, SIZE, SIZE)), arch.blocks)
    randomize_bn(supernet, 2)
    subnet = extract_subnet(supernet, arch)
    image_statistics(subnet, digits_images(SIZE, 64, offset=100), 2)
    return _scaled_output(subnet)


def _scaled_output(net):
    """Scale the classifier so that the logits on the test images reach about 5."""
    size = net.space.input_size
    peak = np.abs(net(mx.nd.array(_images(size, 8))).asnumpy()).max()
    for param in (net.output.weight, net.output.bias):
        param.set_data(param.data() * (5.0 / peak))
    return net


def _random_subnet():
    rng = np.random.RandomState(11)
    arch = Arch(tuple(rng.randint(0, 4, 20)), tuple(rng.randint(0, 10, 20)),
                SE_PLUS.replace(input_size=SIZE, classes=10))
    return _realistic(OneShotNet(arch), seed=3)


NETS = {'oneshot': lambda: _zoo_net('oneshot'), 'oneshot_plus': lambda: _zoo_net('oneshot_plus'),
        'oneshot_s_plus': lambda: _zoo_net('oneshot_s_plus'), 'supernet_path': _supernet_subnet,
        'random_subnet': _random_subnet}


@pytest.fixture(scope='module')
def images():
    return _images(SIZE, 8)


@pytest.fixture(scope='module', params=sorted(NETS))
def model(request):
    net = NETS[request.param]()
    return net, merge_bn(net, (1, 3, SIZE, SIZE))


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _check(net, path, x, one_at_a_time=False):
    """onnxruntime against MXNet on the images ``x``, in one run or image by image (a graph
    fixed at batch 1)."""
    ref = net(mx.nd.array(x)).asnumpy()
    assert np.abs(ref).max() > 1  # logits large enough for 1e-4 to mean something
    session = _session(path)
    out = (np.concatenate([session.run(None, {'data': x[i:i + 1]})[0] for i in range(len(x))])
           if one_at_a_time else session.run(None, {'data': x})[0])
    assert_parity(ref, out, atol=1e-4 * np.abs(ref).max())  # float32 through 20 merged units


def _ops(path_or_model):
    model = onnx.load(path_or_model) if isinstance(path_or_model, str) else path_or_model
    return collections.Counter(node.op_type for node in model.graph.node)


@pytest.mark.integration
def test_default_form_matches_mxnet_fixed_and_dynamic_batch(model, images, tmp_path):
    net, merged = model
    fixed, dynamic = str(tmp_path / 'f.onnx'), str(tmp_path / 'd.onnx')
    export_onnx(merged, fixed, (1, 3, SIZE, SIZE), opset=14, channel_block=16)
    export_onnx(merged, dynamic, (1, 3, SIZE, SIZE), opset=14, dynamic_batch=True,
                channel_block=16)
    _check(net, fixed, images[:2], one_at_a_time=True)
    _check(net, dynamic, images[:4], one_at_a_time=True)
    _check(net, dynamic, images)
    for path in (fixed, dynamic):  # the shuffle is gone: only slices of conv outputs are left
        ops = _ops(path)
        assert ops['Slice'] > 0 and ops['Concat'] > 0
        assert not {'Reshape', 'Transpose', 'Gather', 'Shape'} & set(ops)


@pytest.mark.integration
@pytest.mark.parametrize('form', ['reshape', 'gather', 'slices'])
def test_every_form_matches_mxnet(form, images, tmp_path):
    net = NETS['oneshot_s_plus']()
    path = str(tmp_path / 'm.onnx')
    export_onnx(merge_bn(net, (1, 3, SIZE, SIZE)), path, (1, 3, SIZE, SIZE), opset=13,
                dynamic_batch=True, shuffle=form, channel_block=16)
    _check(net, path, images)
    ops = _ops(path)
    assert ops['Transpose'] == (16 if form == 'reshape' else 0)
    assert ops['Gather'] == (32 if form == 'gather' else 0)


def _spec_reference_perm(channels):
    """SPEC §1.4: output channel order 0, C/2, 1, C/2+1, ..."""
    return np.arange(channels).reshape(2, channels // 2).T.reshape(-1)


@pytest.mark.parametrize('dynamic_batch', [False, True])
def test_toy_shuffle_is_found_with_the_spec_permutation(tmp_path, dynamic_batch):
    path = str(tmp_path / 'toy.onnx')
    export_onnx(toy_net(), path, TOY_SHAPE, dynamic_batch=dynamic_batch, shuffle='reshape')
    sites = find_channel_shuffles(onnx.load(path))
    assert len(sites) == 1
    np.testing.assert_array_equal(sites[0].perm, _spec_reference_perm(16))


@pytest.mark.parametrize('mode', ['reference', 'official'])
def test_subnet_shuffles_are_found_in_either_mode(tiny_arch, tmp_path, mode):
    net = OneShotNet(tiny_arch, shuffle=mode)
    net.initialize()
    path = str(tmp_path / 'n.onnx')
    export_onnx(net, path, (1, 3, 32, 32), shuffle='reshape')
    sites = find_channel_shuffles(onnx.load(path))
    assert len(sites) == 16  # one per stride-1 unit
    expected = {c: (_spec_reference_perm(c) if mode == 'reference'
                    else np.concatenate([np.arange(0, c, 2), np.arange(1, c, 2)]))
                for c in (64, 160, 320, 640)}
    for site in sites:
        np.testing.assert_array_equal(site.perm, expected[len(site.perm)])


class _ShuffleToOutput(mx.gluon.HybridBlock):
    """The shuffled halves reach the graph output directly: no order can be pushed anywhere."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = mx.gluon.nn.Conv2D(8, 1, in_channels=3)

    def hybrid_forward(self, F, x):
        y = F.reshape(self.conv(x), shape=(0, 2, 4, -1))
        y = F.reshape_like(F.swapaxes(y, 1, 2), F.zeros_like(self.conv(x)))
        return F.concat(F.slice_axis(y, axis=1, begin=4, end=8),
                        F.slice_axis(y, axis=1, begin=0, end=4), dim=1) * 2


def test_order_that_cannot_be_absorbed_keeps_a_gather(tmp_path):
    net = _ShuffleToOutput()
    net.initialize(mx.init.Xavier())
    path = str(tmp_path / 's.onnx')
    export_onnx(net, path, (1, 3, 8, 8), shuffle='slices')
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    session = _session(path)
    out = np.concatenate([session.run(None, {'data': x[i:i + 1]})[0] for i in range(3)])
    assert_parity(net(mx.nd.array(x)), out, atol=1e-5)  # a wrong order shows on varied input
    assert _ops(path)['Gather'] == 2  # the halves' own order reaches the output
    assert 'Transpose' not in _ops(path)


class _MidBranch(mx.gluon.HybridBlock):
    """1x1 (12 ch) -> relu -> depthwise -> 1x1, and a second 12-channel conv that feeds a Concat."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.expand = mx.gluon.nn.Conv2D(12, 1, in_channels=16)
            self.dw = mx.gluon.nn.Conv2D(12, 3, padding=1, groups=12, in_channels=12)
            self.project = mx.gluon.nn.Conv2D(16, 1, in_channels=12)
            self.side = mx.gluon.nn.Conv2D(12, 1, in_channels=16)

    def hybrid_forward(self, F, x):
        y = self.project(self.dw(F.relu(self.expand(x))))
        return F.concat(y, self.side(x), dim=1)


def test_pad_channels_pads_a_conv_chain_but_not_a_concat_input(tmp_path):
    net = _MidBranch()
    net.initialize(mx.init.Xavier())
    for param in net.collect_params().values():
        if param.name.endswith('bias'):
            param.set_data(mx.nd.random.normal(shape=param.shape))
    path = str(tmp_path / 'm.onnx')
    export_onnx(net, path, (1, 16, 8, 8))
    model = onnx.load(path)
    padded = pad_channels(model, block=16)
    weights = {init.name: init.dims for init in padded.graph.initializer}
    shapes = sorted(tuple(weights[node.input[1]]) for node in padded.graph.node
                    if node.op_type == 'Conv')
    assert shapes == [(12, 16, 1, 1), (16, 1, 3, 3), (16, 16, 1, 1), (16, 16, 1, 1)]
    x = np.random.default_rng(0).normal(size=(3, 16, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(padded.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    out = np.concatenate([session.run(None, {'data': x[i:i + 1]})[0] for i in range(3)])
    assert_parity(net(mx.nd.array(x)), out, atol=1e-5)


def _plain_layout_convs(path, tmp_path):
    """Convs onnxruntime could not move to its blocked (NCHWc) layout, and the blocked ones."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    blocked = sum(1 for n in nodes if n.op_type == 'Conv' and n.domain.endswith('nchwc'))
    plain = sum(1 for n in nodes if n.op_type in ('Conv', 'FusedConv')
                and not n.domain.endswith('nchwc'))
    return plain, blocked


@pytest.mark.integration
def test_padding_puts_every_conv_in_the_blocked_layout(tmp_path):
    merged = merge_bn(NETS['oneshot_s_plus'](), (1, 3, SIZE, SIZE))
    naive, fast = str(tmp_path / 'naive.onnx'), str(tmp_path / 'fast.onnx')
    export_onnx(merged, naive, (1, 3, SIZE, SIZE), shuffle='reshape')
    export_onnx(merged, fast, (1, 3, SIZE, SIZE), channel_block=16)
    plain, blocked = _plain_layout_convs(naive, tmp_path)
    if blocked == 0:
        pytest.skip('this onnxruntime build does not use the blocked layout')
    assert plain > 0  # odd mid widths (SPEC §1.5) keep depthwise and 1x1 convs out of it
    assert _plain_layout_convs(fast, tmp_path) == (0, 98)
    model = onnx.load(fast)
    weights = {init.name: init.dims for init in model.graph.initializer}
    depthwise = [weights[n.input[1]] for n in model.graph.node if n.op_type == 'Conv'
                 and weights[n.input[1]][1] == 1]
    assert depthwise and all(dims[0] % 16 == 0 for dims in depthwise)


def test_gather_pass_leaves_a_graph_without_shuffle_alone(tmp_path):
    path = str(tmp_path / 'm.onnx')
    net = _MidBranch()
    net.initialize()
    export_onnx(net, path, (1, 16, 8, 8))
    model = onnx.load(path)
    assert shuffle_to_gather(model) is model


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize('name', ['oneshot', 'oneshot_plus', 'oneshot_s_plus'])
def test_zoo_model_at_224_matches_mxnet(name, tmp_path):
    import zoo
    mx.random.seed(4)
    net = zoo.get_model(name)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2),
                   force_reinit=True)
    image_statistics(net, digits_images(224, 16, offset=100), 4)
    _scaled_output(net)
    path = str(tmp_path / 'm.onnx')
    export_onnx(merge_bn(net, (1, 3, 224, 224)), path, (1, 3, 224, 224), opset=14,
                dynamic_batch=True, channel_block=16)
    x = _images(224, 8)
    _check(net, path, x[:2], one_at_a_time=True)
    _check(net, path, x)


def test_unknown_form_is_refused_before_writing(tmp_path):
    with pytest.raises(ExportError, match="shuffle form 'transpose' is unknown; choose one of"):
        export_onnx(toy_net(), str(tmp_path / 't.onnx'), TOY_SHAPE, shuffle='transpose')
    assert list(tmp_path.iterdir()) == []
