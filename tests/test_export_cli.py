"""``nas-export``: every kind of MODEL, both formats, and one-line errors that leave no file."""
import json
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from conftest import assert_parity, digits_images, image_statistics
from cli.export import main
from nas.atomic import save_params
from nas.space import Arch

SIZE = 32
NAME = 'oneshot_s_plus'


def _arch(name=NAME):
    import zoo
    return zoo.get_card(name).arch.with_space(input_size=SIZE)


def _weights(tmp_path, arch, seed=0):
    """A weights file with non-trivial BN statistics, and the net holding them."""
    from nas.network import OneShotNet
    net = OneShotNet(arch)
    mx.random.seed(seed)
    net.initialize()
    image_statistics(net, _x(64, offset=100), seed)
    # logits of unit scale that depend on the image (the default classifier init is N(0, 0.01))
    net.output.weight.set_data(mx.nd.random.normal(scale=0.3, shape=net.output.weight.shape))
    path = str(tmp_path / ('w%d.params' % seed))
    save_params(net, path)
    return net, path


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def _onnx_out(path, x):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'data': x})[0]


def _x(batch=1, offset=0):
    return digits_images(SIZE, batch, offset)


def _assert_error(result, fragment, tmp_path, before):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and fragment in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a temp file


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    return _weights(tmp_path_factory.mktemp('w'), _arch())


@pytest.mark.integration
def test_onnx_of_zoo_name_with_params_matches_and_reports(tmp_path, weights):
    net, params = weights
    out = tmp_path / 'm.onnx'
    result = _invoke('--onnx', NAME, '--params', params, '--input-size', SIZE,
                     '--dynamic-batch', '--opset', 14, '-o', out)
    assert result.exit_code == 0, result.output
    text = result.output
    assert 'onnx.checker.check_model(full_check)' in text and 'shape_inference' in text
    assert 'opset 14' in text and '%.1f MB' % (os.path.getsize(out) / 1e6) in text
    assert 'input  data (N, 3, 32, 32)' in text and '(N, 1000)' in text
    x = _x(4)
    ref = net(mx.nd.array(x)).asnumpy()
    assert np.abs(_onnx_out(str(out), x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert os.listdir(tmp_path) == ['m.onnx']
    model = onnx.load(str(out))  # deployment defaults: no shuffle ops, padded depthwise convs
    weights = {init.name: init.dims for init in model.graph.initializer}
    depthwise = [weights[n.input[1]][0] for n in model.graph.node
                 if n.op_type == 'Conv' and weights[n.input[1]][1] == 1]
    assert depthwise and all(c % 16 == 0 for c in depthwise)
    assert not {'Transpose', 'Reshape', 'Gather'} & {n.op_type for n in model.graph.node}


@pytest.mark.integration
def test_no_merge_bn_keeps_batchnorm_and_fixed_batch(tmp_path, weights):
    _, params = weights
    merged, unmerged = tmp_path / 'a.onnx', tmp_path / 'b.onnx'
    assert _invoke('--onnx', NAME, '--params', params, '--input-size', SIZE, '--batch-size', 2,
                   '-o', merged).exit_code == 0
    result = _invoke('--onnx', NAME, '--params', params, '--input-size', SIZE, '--batch-size', 2,
                     '--no-merge-bn', '-o', unmerged)
    assert result.exit_code == 0 and 'input  data (2, 3, 32, 32)' in result.output

    def bns(path):
        return sum(n.op_type == 'BatchNormalization' for n in onnx.load(str(path)).graph.node)
    assert bns(merged) == 0 and bns(unmerged) > 0
    x = _x(2)
    np.testing.assert_allclose(_onnx_out(str(merged), x), _onnx_out(str(unmerged), x),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.integration
@pytest.mark.parametrize('optimize', [True, False])
def test_mxnet_export_reloads_with_symbolblock(tmp_path, weights, optimize):
    """The default is the deployment graph (fused, shuffle in the weights); ``--no-optimize``
    writes the graph as traced. Both load with plain ``SymbolBlock.imports``."""
    net, params = weights
    prefix = tmp_path / 'm'
    result = _invoke('--mxnet', NAME, '--params', params, '--input-size', SIZE, '-o', prefix,
                     '--optimize' if optimize else '--no-optimize')
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ['m-0000.params', 'm-symbol.json']
    assert 'output' in result.output and '(1, 1000)' in result.output
    assert ('deployment graph:' in result.output) == optimize
    with open(str(prefix) + '-symbol.json') as handle:
        ops = {node['op'] for node in json.load(handle)['nodes']}
    assert ('_sg_mkldnn_conv' in ops) == optimize and ('SwapAxis' in ops) != optimize
    block = mx.gluon.SymbolBlock.imports(str(prefix) + '-symbol.json', ['data'],
                                         str(prefix) + '-0000.params')
    x = mx.nd.array(_x(2))
    assert_parity(net(x), block(x))


@pytest.mark.integration
def test_architecture_json_user_zoo_and_pretrained_store(tmp_path, store_root):
    import zoo
    arch = _arch('oneshot')
    net, params = _weights(tmp_path, arch, seed=1)
    arch_file = tmp_path / 'arch.json'
    arch.save(str(arch_file))
    zoo.register_model('searched', arch, root=store_root)
    zoo.import_weights('oneshot', params, root=store_root)
    x = _x()
    ref = net(mx.nd.array(x)).asnumpy()
    runs = {'json': ['--onnx', arch_file, '--params', params],
            'user': ['--onnx', 'searched', '--params', params, '--root', store_root],
            'store': ['--onnx', 'oneshot', '--pretrained', '--root', store_root]}
    for tag, args in runs.items():
        out = tmp_path / (tag + '.onnx')
        result = _invoke(*args, '--input-size', SIZE, '-o', out)
        assert result.exit_code == 0, (tag, result.output)
        assert np.abs(_onnx_out(str(out), x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_unsupported_opset_is_refused(tmp_path):
    result = _invoke('--onnx', NAME, '--input-size', SIZE, '--opset', 9, '-o', tmp_path / 'm.onnx')
    _assert_error(result, 'opset 9 is not supported', tmp_path, [])


def test_unwritable_output_is_refused(tmp_path, weights):
    _, params = weights
    result = _invoke('--onnx', NAME, '--params', params, '--input-size', SIZE,
                     '-o', tmp_path / 'absent' / 'm.onnx')
    _assert_error(result, 'cannot write', tmp_path, [])


def test_weights_of_another_architecture_are_refused(tmp_path):
    arch = _arch()
    narrower = Arch(arch.blocks, tuple(max(0, c - 1) for c in arch.channels), arch.space)
    _, same_layers = _weights(tmp_path, narrower, seed=2)  # same tensors, other shapes
    _, other_layers = _weights(tmp_path, _arch('oneshot'), seed=3)
    before = sorted(os.listdir(tmp_path))
    for params, fragment in ((same_layers, 'the weights belong to another architecture'),
                             (other_layers, 'does not fit this architecture')):
        for fmt, target in (('--onnx', 'm.onnx'), ('--mxnet', 'm')):
            result = _invoke(fmt, NAME, '--params', params, '--input-size', SIZE, '-o',
                             tmp_path / target)
            _assert_error(result, fragment, tmp_path, before)


def test_input_size_must_be_a_multiple_of_32(tmp_path):
    result = _invoke('--onnx', NAME, '--input-size', 100, '-o', tmp_path / 'm.onnx')
    _assert_error(result, "'--input-size': 100 is not a multiple of 32", tmp_path, [])


def test_supernet_is_refused_with_a_hint(tmp_path):
    result = _invoke('--onnx', 'oneshot_supernet', '--input-size', SIZE, '-o', tmp_path / 'm.onnx')
    _assert_error(result, 'extract_subnet', tmp_path, [])


def test_unknown_model_lists_the_known_ones(tmp_path):
    result = _invoke('--mxnet', 'oneshot_s', '-o', tmp_path / 'm')
    _assert_error(result, "unknown model 'oneshot_s'", tmp_path, [])


@pytest.mark.parametrize('args', [['--onnx', NAME, '--mxnet', NAME],
                                  ['--onnx', NAME, '--batch-size', 2, '--dynamic-batch'], []])
def test_conflicting_options_are_usage_errors(tmp_path, args):
    result = _invoke(*args, '-o', tmp_path / 'm.onnx')
    assert result.exit_code == 2 and result.stderr.startswith('error: ')
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no usage text
    assert os.listdir(tmp_path) == []
