import mxnet as mx
import numpy as np
import pytest

from nas.errors import ArchError
from nas.network import OneShotNet, channel_mask
from nas.space import SearchSpace
from nas.subnet import extract_subnet
from zoo import get_card, get_model, list_models
from conftest import SE_PLUS, digits_images, image_statistics, randomize_bn

SUBNETS = [n for n in list_models() if get_card(n).arch is not None]


def copy_params(src, dst):
    source = src._collect_params_with_prefix()
    for name, param in dst._collect_params_with_prefix().items():
        param.set_data(source[name].data())


def learnable_params(net):
    return sum(int(np.prod(p.shape)) for name, p in net.collect_params().items()
               if not name.endswith(('running_mean', 'running_var')))


@pytest.mark.parametrize('name,expected', [
    ('oneshot', 3433579), ('oneshot_plus', 3742955), ('oneshot_s_plus', 3541829)])
def test_zoo_param_counts_match_spec(name, expected):
    assert learnable_params(get_model(name)) == expected


@pytest.mark.parametrize('space,expected', [
    (SE_PLUS, 17180248), (SearchSpace(), 15939672)])
def test_supernet_param_counts_match_spec(space, expected):
    net = OneShotNet(space=space)
    net.initialize()
    assert learnable_params(net) == expected


@pytest.mark.parametrize('name', SUBNETS)
@pytest.mark.parametrize('size,batch', [(32, 1), (32, 4), (224, 1)])
def test_forward_shapes_and_hybridize_equal(name, size, batch):
    net = get_model(name, input_size=size, classes=10)
    randomize_bn(net)
    x = mx.nd.random.uniform(shape=(batch, 3, size, size))
    imperative = net(x).asnumpy()
    assert imperative.shape == (batch, 10)
    net.hybridize()
    hybrid = net(x).asnumpy()
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-5, atol=1e-6)


def _supernet_on_images(arch):
    """A supernet whose BN statistics on ``arch``'s path come from real images, and the mask."""
    mx.random.seed(0)
    supernet = OneShotNet(space=arch.space)
    supernet.initialize()
    mask = channel_mask(arch.space, arch.channels)
    supernet(mx.nd.zeros((1, 3, 32, 32)), arch.blocks, mask)
    image_statistics(supernet, digits_images(32, 64, offset=100),
                     forward=lambda x: supernet(x, arch.blocks, mask))
    return supernet, mask


def test_supernet_path_equals_extracted_zoo_subnet():
    arch = get_card('oneshot_s_plus').arch.with_space(input_size=32, classes=10)
    supernet, mask = _supernet_on_images(arch)
    # a classifier with real weight scale, so that the comparison is not on near-zero logits
    supernet.output.weight.set_data(mx.nd.random.normal(shape=supernet.output.weight.shape))
    x = mx.nd.array(digits_images(32, 2))
    path_out = supernet(x, arch.blocks, mask).asnumpy()
    subnet = extract_subnet(supernet, arch)
    zoo_shapes = {k: p.shape for k, p in get_model('oneshot_s_plus', input_size=32, classes=10)
                  ._collect_params_with_prefix().items()}
    assert {k: p.shape for k, p in subnet._collect_params_with_prefix().items()} == zoo_shapes
    # equal to float32 rounding: the supernet sums over zeroed channels the subnet never has
    assert np.abs(subnet(x).asnumpy() - path_out).max() <= 1e-5 * np.abs(path_out).max()
    assert np.abs(path_out).max() > 0.1
    # the two images give different logits: the comparison is not between constants
    assert np.abs(path_out[0] - path_out[1]).max() > 1e-3 * np.abs(path_out).max()


def test_masked_channels_do_not_leak(tiny_arch):
    """Changing weights of masked-off channels must not change the path output (SPEC §2.2)."""
    supernet, mask = _supernet_on_images(tiny_arch)
    x = mx.nd.array(digits_images(32, 1))
    before = supernet(x, tiny_arch.blocks, mask).asnumpy()
    position = int(np.argmin(tiny_arch.channels))
    unit = supernet.units[position].choices[tiny_arch.blocks[position]]
    mid = tiny_arch.mid(position)
    betas = [p for name, p in unit.collect_params().items() if name.endswith('beta')]
    widest = max(p.shape[0] for p in betas)  # the searched (masked) layers; the output BN is
    masked = [p for p in betas if p.shape[0] == widest]  # narrower and never masked
    assert mid < widest and masked

    def shift(channels):
        for param in masked:
            data = param.data().asnumpy()
            data[channels] += 5.0
            param.set_data(mx.nd.array(data))
        return supernet(x, tiny_arch.blocks, mask).asnumpy()

    np.testing.assert_allclose(shift(slice(mid, None)), before, atol=1e-6)
    # the control: the same change on kept channels does reach the output
    after = shift(slice(0, mid))
    assert np.abs(after - before).max() > 1e-4


def test_supernet_needs_choices_and_subnet_refuses_them(tiny_arch):
    supernet = OneShotNet(space=tiny_arch.space)
    supernet.initialize()
    x = mx.nd.ones((1, 3, 32, 32))
    with pytest.raises(ArchError, match='block-choice vector'):
        supernet(x)
    with pytest.raises(ArchError, match='out of range'):
        supernet(x, (5,) * 20)
    single = supernet(x, tiny_arch.blocks, None).asnumpy()
    supernet.use_all_blocks = True
    all_blocks = supernet(x, tiny_arch.blocks, None).asnumpy()
    assert all_blocks.shape == (1, 10) and not np.allclose(all_blocks, single)
    subnet = OneShotNet(tiny_arch)
    subnet.initialize()
    with pytest.raises(ArchError):
        subnet(x, tiny_arch.blocks)


def test_official_shuffle_is_a_different_permutation(tiny_arch):
    ref = OneShotNet(tiny_arch)
    ref.initialize()
    official = OneShotNet(tiny_arch, shuffle='official')
    official.initialize()
    randomize_bn(ref)
    copy_params(ref, official)
    x = mx.nd.random.uniform(shape=(1, 3, 32, 32))
    assert not np.allclose(ref(x).asnumpy(), official(x).asnumpy(), atol=1e-7)


def test_reference_shuffle_permutation():
    from nas.blocks import ChannelShuffleSplit
    c = 8
    x = mx.nd.arange(c).reshape((1, c, 1, 1))
    identity, main = ChannelShuffleSplit(c)(x)
    # SPEC §1.4: order [0, C/2, 1, C/2+1, ...]
    assert identity.asnumpy().ravel().tolist() == [0, 4, 1, 5]
    assert main.asnumpy().ravel().tolist() == [2, 6, 3, 7]
    identity, main = ChannelShuffleSplit(c, 'official')(x)
    assert identity.asnumpy().ravel().tolist() == [0, 2, 4, 6]


@pytest.mark.gpu
@pytest.mark.skipif(mx.context.num_gpus() == 0, reason='needs a GPU and mxnet-cu112')
def test_gpu_forward_matches_cpu():
    net_cpu = get_model('oneshot_s_plus', input_size=32, classes=10)
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    expected = net_cpu(x).asnumpy()
    net_gpu = get_model('oneshot_s_plus', input_size=32, classes=10, ctx=mx.gpu())
    copy_params(net_cpu, net_gpu)
    np.testing.assert_allclose(net_gpu(x.as_in_context(mx.gpu())).asnumpy(), expected,
                               rtol=1e-4, atol=1e-5)
