"""One way to get a network with weights (``zoo.load_model``), whichever door a model comes in by:
every kind of model name, every source of weights, and the same warning from every command when
a model has none."""
import importlib
import logging
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

import zoo
from conftest import randomize_bn
from nas.atomic import save_params
from nas.errors import UnknownModelError, WeightsError
from nas.network import OneShotNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = 'tiny_loaded'
RANDOM_WARNING = ('random weights for %s: none given and none in the model store; give --params '
                  'FILE (Python: weights=FILE) or store them with nas-zoo import %s FILE'
                  % (NAME, NAME))


def _commands(out):
    """The four commands that take a model, each at its cheapest on the 32x32 model NAME."""
    return {
        'export': ('cli.export', ['--onnx', NAME, '-o', str(out / 'm.onnx')]),
        'quantize': ('cli.quantize', [NAME, '--backend', 'mxnet', '--calib-data', 'digits',
                                      '--num-calib', '8', '-o', str(out / 'q'), '--quiet']),
        'score': ('cli.score', ['flops', NAME]),
        'profile': ('cli.profile', ['--op-by-op', NAME, '--input-size', '32', '--runs', '2',
                                    '--warmup', '1', '--quiet']),
    }


@pytest.fixture
def home(tmp_path, tiny_arch):
    """An MXNET_HOME whose user zoo holds NAME (32x32, 10 classes) and whose store is empty."""
    zoo.register_model(NAME, tiny_arch, root=str(tmp_path / 'models'))
    return tmp_path


@pytest.fixture
def trained(tmp_path, tiny_arch):
    """A weights file of NAME's architecture, and the network it came from."""
    net = OneShotNet(tiny_arch)
    net.initialize(mx.init.Xavier())
    randomize_bn(net, seed=3)
    path = str(tmp_path / 'trained.params')
    save_params(net, path)
    return path, net


def _same_weights(net, reference):
    expected = reference._collect_params_with_prefix()
    got = net._collect_params_with_prefix()
    assert set(got) == set(expected)
    for name, param in got.items():
        np.testing.assert_array_equal(param.data().asnumpy(), expected[name].data().asnumpy())


@pytest.mark.parametrize('command', ['export', 'quantize', 'score', 'profile'])
def test_every_command_warns_alike_on_stderr_for_a_model_without_weights(home, command):
    module, args = _commands(home)[command]
    done = subprocess.run([sys.executable, '-c', 'from %s import main; main()' % module] + args,
                          cwd=ROOT, env=dict(os.environ, MXNET_HOME=str(home)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if 'random weights' in line]
    assert warnings == [RANDOM_WARNING]


@pytest.mark.parametrize('command', ['export', 'quantize', 'score', 'profile'])
def test_every_command_takes_stored_weights_or_a_file_silently(home, trained, command, caplog):
    module, args = _commands(home)[command]
    cli = importlib.import_module(module).main
    env = {'MXNET_HOME': str(home)}
    with caplog.at_level(logging.WARNING, logger='zoo.loading'):
        with_file = CliRunner().invoke(cli, args + ['--params', trained[0]], env=env)
        zoo.import_weights(NAME, trained[0], root=str(home / 'models'))
        stored = CliRunner().invoke(cli, args, env=env)
        required = CliRunner().invoke(cli, args + ['--pretrained'], env=env)
    for result in (with_file, stored, required):
        assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.name == 'zoo.loading']


@pytest.mark.parametrize('command', ['export', 'quantize', 'score', 'profile'])
def test_every_command_names_a_missing_weights_file_and_refuses_two_sources(home, command):
    module, args = _commands(home)[command]
    cli = importlib.import_module(module).main
    missing = str(home / 'nowhere' / 'w.params')
    result = CliRunner().invoke(cli, args + ['--params', missing],
                                env={'MXNET_HOME': str(home)})
    assert result.exit_code == 2 and 'weights file %s does not exist' % missing in result.output
    both = CliRunner().invoke(cli, args + ['--params', missing, '--pretrained'])
    assert both.exit_code == 2 and 'either --pretrained or --params, not both' in both.output


def test_every_kind_of_name_loads(home, tiny_arch, caplog):
    root = str(home / 'models')
    arch_file = str(home / 'arch.json')
    tiny_arch.save(arch_file)
    with caplog.at_level(logging.WARNING, logger='zoo.loading'):
        builtin = zoo.load_model('oneshot_plus', root=root)
        user = zoo.load_model(NAME, root=root)
        from_file = zoo.load_model(arch_file, root=root, input_size=64)
        gluoncv = zoo.load_model('MobileNetV2_1.4', root=root, classes=10)
        supernet = zoo.load_model('oneshot_supernet', root=root)
    assert builtin.arch == zoo.get_card('oneshot_plus').arch and builtin.input_size == 224
    assert user.arch == tiny_arch and user.input_size == 32
    assert from_file.arch == tiny_arch.with_space(input_size=64) and from_file.input_size == 64
    assert gluoncv.arch is None and gluoncv.input_size == 224
    assert supernet.arch is None and supernet.net.space == zoo.get_card('oneshot_supernet').space
    x = mx.nd.random.uniform(shape=(1, 3, 32, 32))
    assert user.net(x).shape == gluoncv.net(x).shape == (1, 10)
    assert all(m.weights is None for m in (builtin, user, from_file, gluoncv, supernet))
    warned = [r.getMessage() for r in caplog.records if r.name == 'zoo.loading']
    assert [w.split(':')[0] for w in warned] == ['random weights for %s' % name for name in (
        'oneshot_plus', NAME, arch_file, 'MobileNetV2_1.4', 'oneshot_supernet')]
    assert 'nas-zoo import' not in warned[2] and 'nas-zoo import' not in warned[3]


def test_onnx_files_only_where_the_caller_takes_them(tmp_path):
    path = str(tmp_path / 'm.onnx')
    with pytest.raises(UnknownModelError, match='does not exist'):
        zoo.load_model(path, onnx=True)
    with open(path, 'wb') as handle:
        handle.write(b'not parsed here')
    loaded = zoo.load_model(path, onnx=True)
    assert (loaded.net, loaded.onnx, loaded.weights, loaded.input_size) == (None, path, path, None)
    with pytest.raises(UnknownModelError, match='is an ONNX file; this needs'):
        zoo.load_model(path)
    with pytest.raises(WeightsError, match='carries its own weights'):
        zoo.load_model(path, weights='x.params', onnx=True)


def test_weights_from_the_store_a_file_or_nowhere(home, trained, caplog):
    root = str(home / 'models')
    path, reference = trained
    with pytest.raises(WeightsError, match="no pretrained weights for '%s'" % NAME):
        zoo.load_model(NAME, zoo.PRETRAINED, root=root)
    from_file = zoo.load_model(NAME, path, root=root)
    assert from_file.weights == path
    _same_weights(from_file.net, reference)
    stored = zoo.import_weights(NAME, path, root=root)
    with caplog.at_level(logging.WARNING, logger='zoo.loading'):
        for weights in (None, zoo.PRETRAINED):
            loaded = zoo.load_model(NAME, weights, root=root)
            assert loaded.weights == stored
            _same_weights(loaded.net, reference)
    assert not [r for r in caplog.records if r.name == 'zoo.loading']
    with pytest.raises(WeightsError, match='is not a zoo model'):
        zoo.load_model('resnet18_v1', zoo.PRETRAINED, root=root)


def test_a_broken_store_entry_is_an_error_not_random_weights(home, trained):
    root = str(home / 'models')
    stored = zoo.import_weights(NAME, trained[0], root=root)
    with open(stored, 'ab') as handle:
        handle.write(b'tampered')
    with pytest.raises(WeightsError, match='sha1 mismatch'):
        zoo.load_model(NAME, root=root)


def test_weights_of_another_architecture_are_refused_naming_the_file(home, tmp_path):
    other = zoo.get_model('oneshot', input_size=32, classes=10)
    path = str(tmp_path / 'other.params')
    save_params(other, path)
    with pytest.raises(WeightsError, match=str(tmp_path)):
        zoo.load_model(NAME, path, root=str(home / 'models'))
