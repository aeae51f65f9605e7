"""``nas-score``: exact SPEC figures through the CLI, agreement with the library, bad input."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from nas.counting import count_net
from nas.network import OneShotNet
from cli.score import main
from profiling.scores import micronet_score

# A hand-built ONNX graph (3x16x16 in): conv 3->4 3x3 pad 1 with bias, ReLU, GAP, Gemm 4->2
ONNX_FLOPS = 16 * 16 * 4 * 27 + 16 * 16 * 4 + 4 * 16 * 16 + (2 * 4 + 2)  # conv+bias, GAP, Gemm
ONNX_PARAMS = 4 * 27 + 4 + 2 * 4 + 2


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result


def _json(*args):
    result = _run(*args, '--json')
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _assert_user_error(result, text):
    assert result.exit_code == 2
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and text in lines[0], lines


def _write_onnx(path, dims):
    """The hand-built graph with input dims ``dims`` (ints or symbolic names)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.randn(*shape).astype('float32'), name)
    nodes = [helper.make_node('Conv', ['data', 'w1', 'b1'], ['c'], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node('Relu', ['c'], ['r']),
             helper.make_node('GlobalAveragePool', ['r'], ['g']),
             helper.make_node('Flatten', ['g'], ['f']),
             helper.make_node('Gemm', ['f', 'w2', 'b2'], ['out'], transB=1)]
    graph = helper.make_graph(
        nodes, 'tiny', [helper.make_tensor_value_info('data', TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, [dims[0], 2])],
        [weight('w1', 4, 3, 3, 3), weight('b1', 4), weight('w2', 2, 4), weight('b2', 2)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)]), path)
    return path


@pytest.fixture
def onnx_file(tmp_path):
    return _write_onnx(str(tmp_path / 'tiny.onnx'), [1, 3, 16, 16])


# -- flops --------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, flops, params', [
    ('oneshot_s_plus', 291475944, 3541829),
    ('oneshot_plus', 297058024, 3742955),
    ('oneshot', 327909096, 3433579),
])
def test_flops_of_the_zoo_models_match_spec(name, flops, params):
    """SPEC §8 [verified], to the unit."""
    data = _json('flops', name)
    assert (data['flops'], data['params']) == (flops, params)
    assert data['input_shape'] == [3, 224, 224]
    text = _run('flops', name).stdout
    assert '{:,} ({:.6f}M)'.format(flops, flops / 1e6) in text


def test_flops_of_an_arch_json_per_layer_and_csv(tiny_arch, tmp_path):
    """An architecture JSON at its own input size (32) and at --input-size 64; the per-layer
    rows, the CSV and the totals agree with the library counter."""
    arch_path = str(tmp_path / 'arch.json')
    tiny_arch.save(arch_path)
    csv_path = str(tmp_path / 'layers.csv')
    data = _json('flops', arch_path, '--per-layer', '--csv', csv_path)
    expected = count_net(OneShotNet(tiny_arch), (3, 32, 32))
    assert (data['flops'], data['params']) == (expected.flops, expected.params)
    assert [(r['flops'], r['params']) for r in data['layers']] == \
        [(r.flops, r.params) for r in expected.layers]
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r['flops']), int(r['params'])) for r in rows] == \
        [(r.flops, r.params) for r in expected.layers]
    bigger = count_net(OneShotNet(tiny_arch.with_space(input_size=64)), (3, 64, 64))
    assert _json('flops', arch_path, '--input-size', 64)['flops'] == bigger.flops > data['flops']
    table = _run('flops', arch_path, '--per-layer').stdout.splitlines()
    assert len(table) == 1 + len(expected.layers) + 3  # header, layers, model/FLOPs/params


def test_flops_of_an_onnx_file(onnx_file):
    data = _json('flops', onnx_file)
    assert (data['flops'], data['params']) == (ONNX_FLOPS, ONNX_PARAMS)


# -- normalized ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name, exact, seed', [
    ('oneshot_s_plus', 1.9304, 1.9166),
    ('oneshot_plus', 2.0065, 1.9937),
    ('oneshot', 2.0096, 2.0),
])
def test_normalized_prints_exact_and_seed_values(name, exact, seed):
    """SPEC §6.3: exact Σ [verified] beside the seed table's value from rounded figures."""
    data = _json('normalized', name)
    assert round(data['score'], 4) == exact
    assert round(data['seed']['score'], 4) == seed
    text = _run('normalized', name).stdout
    assert '%.4f (exact counts)' % exact in text
    assert '%.4f (seed table' % seed in text


def test_normalized_of_a_gluoncv_model_against_another_reference():
    """MobileNetV3-Large: seed Σ 2.25 from 217M / 5.4M; against itself the seed figures give 2."""
    data = _json('normalized', 'mobilenetv3_large')
    assert round(data['seed']['score'], 2) == 2.25
    assert data['score'] == pytest.approx(data['flops'] / 328e6 + data['params'] / 3.4e6)
    own = _json('normalized', 'mobilenetv3_large', '--ref', 'MobileNetV3_large')
    assert own['seed']['score'] == pytest.approx(2.0)
    assert (own['ref_flops'], own['ref_params']) == (217e6, 5.4e6)


def test_normalized_has_no_seed_value_off_the_seed_table(tiny_arch, tmp_path):
    arch_path = str(tmp_path / 'arch.json')
    tiny_arch.save(arch_path)
    assert _json('normalized', arch_path)['seed'] is None
    assert _json('normalized', 'oneshot', '--input-size', 256)['seed'] is None
    assert 'seed table' not in _run('normalized', arch_path).stdout


# -- micronet -----------------------------------------------------------------------------------

def test_micronet_of_oneshot_s_plus_at_32_16_8_bits():
    import zoo
    net = zoo.get_model('oneshot_s_plus')
    data = _json('micronet', 'oneshot_s_plus', '--bits', 32)
    assert data['bits'] == 32 and sorted(data['scenarios']) == ['16', '32', '8']
    for bits in (32, 16, 8):
        expected = micronet_score(net, (3, 224, 224), bits=bits)
        got = data['scenarios'][str(bits)]
        assert (got['score'], got['params'], got['mults'], got['adds']) == \
            (expected.score, expected.params, expected.mults, expected.adds)
    s32, s16, s8 = (data['scenarios'][b] for b in ('32', '16', '8'))
    assert s16['params'] == s32['params'] / 2 and s16['mults'] == s32['mults'] / 2
    assert s32['adds'] == s16['adds'] == s8['adds']  # accumulation stays 32-bit
    assert s32['score'] > s16['score'] > s8['score']
    assert data['score'] == s32['score']
    default = _json('micronet', 'oneshot_s_plus')  # a float model gets the 16-bit freebie
    assert default['bits'] == 16 and default['score'] == s16['score']
    assert any('freebie' in line for line in default['conventions'])
    text = _run('micronet', 'oneshot_s_plus', '--bits', 8).stdout
    assert 'channel shuffle: free' in text and 'hard-swish: 3 mults + 1 add' in text
    assert '* the score reported: %.4f' % s8['score'] in text


def test_micronet_count_shuffle_flag_reaches_the_library(tiny_arch, tmp_path):
    arch_path = str(tmp_path / 'arch.json')
    tiny_arch.save(arch_path)
    free = _json('micronet', arch_path, '--bits', 32)
    counted = _json('micronet', arch_path, '--bits', 32, '--count-shuffle')
    expected = micronet_score(OneShotNet(tiny_arch), (3, 32, 32), bits=32, count_shuffle=True)
    assert counted['params'] == expected.params > free['params']
    assert counted['count_shuffle'] and any('sparse' in c for c in counted['conventions'])
    assert any('each entry 1/32 of a param' in c for c in counted['conventions'])
    reference = _json('micronet', arch_path, '--bits', 32, '--convention', 'reference')
    expected = micronet_score(OneShotNet(tiny_arch), (3, 32, 32), bits=32, convention='reference')
    assert (reference['params'], reference['adds']) == (expected.params, expected.adds)
    assert reference['convention'] == 'reference' and reference['params'] != counted['params']
    assert any('1/16 of a param' in c for c in reference['conventions'])


@pytest.mark.integration
def test_micronet_of_a_quantized_onnx_file_reads_bits_from_the_graph(onnx_file, tmp_path):
    from test_scores import _quantize
    quantized = _quantize(onnx_file, str(tmp_path / 'q.onnx'), 'QDQ')
    data = _json('micronet', quantized)
    expected = micronet_score(quantized)
    assert data['bits'] == 'graph' and list(data['scenarios']) == ['graph']
    assert (data['params'], data['mults'], data['adds']) == \
        (expected.params, expected.mults, expected.adds)
    assert data['params'] < data['raw_params']  # int8 weights count a quarter
    assert 'raw' in _run('micronet', quantized).stdout
    _assert_user_error(_run('micronet', quantized, '--bits', 8), 'declares its own bit widths')


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize('command', ['flops', 'normalized', 'micronet'])
def test_unknown_model_name(command):
    _assert_user_error(_run(command, 'oneshot_s'), "unknown model 'oneshot_s'")


def test_non_model_files(tmp_path):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a model\n')
    _assert_user_error(_run('flops', str(notes)), 'is not a valid architecture file: invalid JSON')
    fake = tmp_path / 'fake.onnx'
    fake.write_text('not a protobuf\n')
    _assert_user_error(_run('micronet', str(fake)), 'is not an ONNX model')
    _assert_user_error(_run('flops', str(tmp_path / 'missing.json')), 'does not exist')


def test_dynamic_onnx_needs_input_size(tmp_path):
    path = _write_onnx(str(tmp_path / 'dynamic.onnx'), ['N', 3, 'H', 'W'])
    for command in ('flops', 'normalized', 'micronet'):
        _assert_user_error(_run(command, path), 'pass input_size')
    data = _json('flops', path, '--input-size', 32)  # four times the 16 x 16 conv and GAP
    assert (data['flops'], data['params']) == (32 * 32 * 4 * (27 + 1 + 1) + 10, ONNX_PARAMS)


def test_bad_options_are_one_line_errors():
    _assert_user_error(_run('normalized', 'oneshot', '--ref', 'ResNet'),
                       "unknown comparison model 'ResNet'; known: SinglePathOneShot, ")
    _assert_user_error(_run('micronet', 'oneshot', '--bits', 4), "'4' is not one of '32', '16'")
    _assert_user_error(_run('flops', 'oneshot', '--input-size', 100), 'not a multiple of 32')
