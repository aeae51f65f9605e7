import json
import os

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

import zoo
from nas.errors import UnknownModelError, WeightsError
from nas.network import OneShotNet
from nas.space import Arch
from zoo import store
from cli.zoo import main as zoo_cli
from conftest import randomize_bn


def test_list_models_with_patterns():
    assert zoo.list_models() == ['oneshot', 'oneshot_plus', 'oneshot_s_plus', 'oneshot_supernet']
    assert zoo.list_models('oneshot_*plus') == ['oneshot_plus', 'oneshot_s_plus']


def test_unknown_model_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="unknown model 'oneshot_s'.*did you mean"):
        zoo.get_model('oneshot_s')


def test_cards_carry_published_figures_marked_as_such():
    card = zoo.get_card('oneshot_s_plus').to_dict()
    assert card['published_top1'] == 75.75 and 'not measured here' in card['published_note']
    assert card['blocks'][:4] == [0, 0, 0, 1] and card['use_se'] is True


def _trained_like_file(tmp_path, name='oneshot', **kwargs):
    net = zoo.get_model(name, **kwargs)
    randomize_bn(net, seed=3)
    path = str(tmp_path / 'mine.params')
    net.save_parameters(path)
    return net, path


def test_store_round_trip(tmp_path, store_root):
    net, path = _trained_like_file(tmp_path)
    stored = zoo.import_weights('oneshot', path, root=store_root)
    sha1 = store.sha1_of(stored)
    assert os.path.basename(stored) == 'oneshot-%s.params' % sha1[:8]
    assert json.load(open(os.path.join(store_root, 'manifest.json')))['oneshot'] == sha1
    loaded = zoo.get_model('oneshot', pretrained=True, root=store_root)
    expected = net._collect_params_with_prefix()
    for name, param in loaded._collect_params_with_prefix().items():
        np.testing.assert_array_equal(param.data().asnumpy(), expected[name].data().asnumpy())


def test_flipped_byte_is_refused(tmp_path, store_root):
    _, path = _trained_like_file(tmp_path)
    stored = zoo.import_weights('oneshot', path, root=store_root)
    data = bytearray(open(stored, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(stored, 'wb').write(bytes(data))
    with pytest.raises(WeightsError, match='sha1 mismatch'):
        zoo.get_model('oneshot', pretrained=True, root=store_root)


def test_missing_weights_name_the_path(store_root):
    with pytest.raises(WeightsError, match=r'oneshot_plus-<sha1>\.params.*nas-zoo import'):
        zoo.get_model('oneshot_plus', pretrained=True, root=store_root)


def test_wrong_architecture_names_first_mismatch(tmp_path, store_root):
    arch = zoo.get_card('oneshot_s_plus').arch
    other = OneShotNet(Arch(arch.blocks, (9,) * 20, arch.space))
    other.initialize()
    path = str(tmp_path / 'other.params')
    other.save_parameters(path)
    with pytest.raises(WeightsError, match=r'parameter units\.0\.main\.0\.conv\.weight has shape \(64, 16, 1, 1\)'):
        zoo.import_weights('oneshot_s_plus', path, root=store_root)
    _, path = _trained_like_file(tmp_path, 'oneshot')
    with pytest.raises(WeightsError, match='has 382 tensors, the network needs 412'):
        zoo.import_weights('oneshot_s_plus', path, root=store_root)
    assert not os.path.exists(os.path.join(store_root, 'manifest.json'))


def test_truncated_file_is_refused(tmp_path, store_root):
    _, path = _trained_like_file(tmp_path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 3])
    with pytest.raises(WeightsError, match='truncated or not an MXNet'):
        zoo.import_weights('oneshot', path, root=store_root)


def test_reference_layout_file_imports_by_order(tmp_path, store_root):
    """SPEC P1: a file with other names but the same tensors in order imports with shape checks."""
    net, _ = _trained_like_file(tmp_path)
    params = net.collect_params()  # prefixed names, like the reference's files
    path = str(tmp_path / 'reference.params')
    mx.nd.save(path, {name: p.data() for name, p in params.items()})
    zoo.import_weights('oneshot', path, root=store_root)
    loaded = zoo.get_model('oneshot', pretrained=True, root=store_root)
    x = mx.nd.random.uniform(shape=(1, 3, 224, 224))
    np.testing.assert_allclose(loaded(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)


def test_user_zoo_register_and_resolve(tmp_path, store_root, tiny_arch):
    zoo.register_model('digits_net', tiny_arch, root=store_root, description='test')
    assert 'digits_net' in zoo.list_models(root=store_root)
    loaded = zoo.load_model('digits_net', root=store_root)
    assert loaded.arch == tiny_arch and loaded.net(mx.nd.ones((1, 3, 32, 32))).shape == (1, 10)
    arch_file = str(tmp_path / 'arch.json')
    tiny_arch.save(arch_file)
    assert zoo.load_model(arch_file).arch == tiny_arch


def test_cli_list_info_and_errors(tmp_path, store_root):
    runner = CliRunner()
    out = runner.invoke(zoo_cli, ['list', '--json', '--root', store_root])
    assert out.exit_code == 0
    assert [c['name'] for c in json.loads(out.stdout)][:3] == ['oneshot', 'oneshot_plus',
                                                               'oneshot_s_plus']
    info = runner.invoke(zoo_cli, ['info', 'oneshot_s_plus', '--json', '--root', store_root])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert (data['flops'], data['params']) == (291475944, 3541829)
    bad = runner.invoke(zoo_cli, ['info', 'nope', '--root', store_root])
    assert bad.exit_code == 2
    assert bad.stderr.strip().count('\n') == 0 and bad.stderr.startswith('error: unknown model')
    _, path = _trained_like_file(tmp_path)
    missing = runner.invoke(zoo_cli, ['import', 'oneshot', str(tmp_path / 'none.params'),
                                      '--root', store_root])
    assert missing.exit_code == 2 and 'does not exist' in missing.stderr
    ok = runner.invoke(zoo_cli, ['import', 'oneshot', path, '--root', store_root])
    assert ok.exit_code == 0 and 'stored' in ok.stdout
