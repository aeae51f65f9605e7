"""INT8 quantization (issue 6): calibration readers, MXNet and onnxruntime quantizers, the
per-layer report, evaluation, reload, and ``nas-quantize``'s handling of bad input.

Fast tests use a small subnet trained on the embedded digits once per session
(``conftest.digits_net``), calibrated and compared on real images; the ``slow`` ones train a
wider subnet for longer and check accuracy: INT8 top-1 within one point of FP32 on both
runtimes.
"""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SE_PLUS, assert_parity, digits_split, digits_top1
from export.merge_bn import merge_bn
from export.onnx import export_onnx
from nas.counting import count_net
from nas.trace_onnx import trace_onnx

from nas.errors import QuantizationError

from nas.space import Arch
from quantization.calib import ArrayReader, read_batches
from cli.quantize import main
from quantization.mxnet_int8 import load_mxnet_int8, quantize_mxnet, save_mxnet_int8
from quantization.ort_int8 import quantize_ort
from quantization.report import match_layers, sidecar_path

SIZE = 32
SHAPE = (1, 3, SIZE, SIZE)


def _arch(text):
    parsed = Arch.parse(text)
    return Arch(parsed.blocks, parsed.channels, SE_PLUS.replace(input_size=SIZE, classes=10))





def _save(net, arch, folder):
    arch_path, params_path = str(folder / 'arch.json'), str(folder / 'net.params')
    arch.save(arch_path)
    net.save_parameters(params_path)
    return arch_path, params_path


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, digits_net):
    """The session's digits-trained subnet (all four block types), its files, an FP32 ONNX and
    64 real calibration images from the train split."""
    folder = tmp_path_factory.mktemp('tiny')
    arch_path, params_path = _save(digits_net, digits_net.arch, folder)
    onnx_path = str(folder / 'fp32.onnx')
    export_onnx(merge_bn(digits_net, SHAPE), onnx_path, (8, 3, SIZE, SIZE))
    images = digits_split(SIZE, 'train')[0][:64]
    return dict(net=digits_net, arch=arch_path, params=params_path, onnx=onnx_path,
                images=images, folder=folder)


@pytest.fixture(scope='module')
def trained(tiny):
    """The session's digits network with its held-out top-1: the accuracy checks' reference."""
    return dict(tiny, top1=digits_top1(tiny['net'], SIZE))


# ------------------------------------------------------------------ calibration data


def test_array_reader_follows_the_calibration_reader_protocol():
    batches = [np.zeros((4, 3, 8, 8)), np.ones((2, 3, 8, 8))]
    seen = []
    reader = ArrayReader(batches, 'x', on_batch=seen.append)
    first, second, end = reader.get_next(), reader.get_next(), reader.get_next()
    assert list(first) == ['x'] and first['x'].dtype == np.float32 and first['x'].shape[0] == 4
    assert second['x'][0, 0, 0, 0] == 1 and end is None and seen == [4, 2]
    reader.set_range(1, 2)
    assert reader.get_next()['x'].shape[0] == 2 and reader.get_next() is None
    reader.rewind()
    assert len(reader) == 2 and reader.get_next()['x'].shape[0] == 4


def test_read_batches_rejects_empty_and_misshaped_calibration_sets():
    with pytest.raises(QuantizationError, match='empty'):
        read_batches(ArrayReader([]), SHAPE)
    with pytest.raises(QuantizationError, match=r'shape \(4, 1, 32, 32\).*3 x 32 x 32'):
        read_batches(ArrayReader([np.zeros((4, 1, SIZE, SIZE))]), SHAPE)
    with pytest.raises(QuantizationError, match=r'shape \(4, 3, 16, 16\)'):
        read_batches(ArrayReader([np.zeros((4, 3, 16, 16))]), SHAPE)
    with pytest.raises(QuantizationError, match='NaN'):
        read_batches(ArrayReader([np.full((4, 3, SIZE, SIZE), np.nan)]), SHAPE)
    good = read_batches(ArrayReader([np.zeros((4, 3, SIZE, SIZE))]), SHAPE)
    assert len(good) == 1 and good[0].shape == (4, 3, SIZE, SIZE)


def test_match_layers_takes_wildcards_and_rejects_unknown_patterns():
    names = ['net_stem_conv', 'net_unit0_conv', 'net_unit1_conv', 'net_output']
    assert match_layers(names, ['unit*conv']) == {'net_unit0_conv': 'unit*conv',
                                                  'net_unit1_conv': 'unit*conv'}
    assert match_layers(names, ['output', 'stem']) == {'net_output': 'output',
                                                       'net_stem_conv': 'stem'}
    with pytest.raises(QuantizationError, match="'unit7' matches no layer"):
        match_layers(names, ['unit7'])


def test_sidecar_sits_next_to_the_model():
    assert sidecar_path('out/model.onnx') == 'out/model.quant.json'
    assert sidecar_path('out/model') == 'out/model.quant.json'


# ------------------------------------------------------------------ MXNet


def test_mxnet_quantizes_every_conv_but_the_first_and_the_classifier(tiny):
    qnet, report = quantize_mxnet(tiny['net'], ArrayReader([tiny['images']]), SHAPE)
    convs = [layer for layer in count_net(tiny['net'], SHAPE).layers
             if layer.op_type == 'Convolution']
    assert report.num_convs == len(convs)  # the report covers every conv of the graph
    fp32 = report.fp32_layers()
    assert list(fp32) == [report.layers[0].name, report.layers[-1].name]
    assert 'first conv' in fp32[report.layers[0].name]
    assert 'classifier' in fp32[report.layers[-1].name]
    assert report.num_int8_convs == report.num_convs - 2
    assert report.ops['concat']['int8'] > 0 and report.ops['pooling']['int8'] > 0
    assert set(report.ops['elemwise_mul']) == {'fp32'}  # hard-swish multiplies, by default
    assert any('hard-swish' in note for note in report.notes)
    # int8 but close to FP32 on the calibration images
    data = mx.nd.array(tiny['images'][:8])
    ref, out = tiny['net'](data).asnumpy(), qnet(data).asnumpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.1


def test_mxnet_exclude_patterns_and_quantize_all(tiny):
    reader = ArrayReader([tiny['images'][:32]])
    _, everything = quantize_mxnet(tiny['net'], reader, SHAPE, keep_first_last=False,
                                   fp32_hard_swish=False)
    assert everything.num_int8_convs == everything.num_convs
    assert set(everything.ops['elemwise_mul']) == {'int8'}
    target = everything.layers[5].name
    reader.rewind()
    _, report = quantize_mxnet(tiny['net'], reader, SHAPE, exclude=[target],
                               keep_first_last=False)
    assert report.fp32_layers() == {target: 'excluded by pattern %r' % target}
    reader.rewind()
    with pytest.raises(QuantizationError, match='matches no layer'):
        quantize_mxnet(tiny['net'], reader, SHAPE, exclude=['no_such_layer'])


def test_mxnet_uint8_is_a_clear_error(tiny):
    with pytest.raises(QuantizationError, match="cannot run this network quantized to uint8.*int8"):
        quantize_mxnet(tiny['net'], ArrayReader([tiny['images'][:16]]), SHAPE,
                       quantized_dtype='uint8')


def test_mxnet_int8_reloads_with_identical_predictions(tiny, tmp_path):
    qnet, report = quantize_mxnet(tiny['net'], ArrayReader([tiny['images']]), SHAPE)
    prefix = str(tmp_path / 'int8')
    paths = save_mxnet_int8(qnet, prefix, report)
    assert all(os.path.isfile(path) for path in paths)
    data = mx.nd.array(tiny['images'])
    np.testing.assert_array_equal(load_mxnet_int8(prefix)(data).asnumpy(), qnet(data).asnumpy())
    with open(sidecar_path(prefix)) as handle:
        record = json.load(handle)
    assert record['bits']['weights'] == 8 and record['calib_method'] == 'naive'
    assert record['num_int8_convs'] == report.num_int8_convs
    assert [layer['weight_bits'] for layer in record['layers']].count(8) == report.num_int8_convs


def test_mxnet_record_scores_micronet_at_its_bit_widths(tiny, tmp_path):
    """An MXNet INT8 graph declares no bit widths; its record does, and nas-score reads it."""
    from cli.score import main as score_cli

    def score(*args):
        result = CliRunner().invoke(score_cli, ['micronet', tiny['arch'], '--json'] + list(args))
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    reader = ArrayReader([tiny['images'][:16]])
    records = {}
    for name, keep in (('all', False), ('default', True)):
        reader.rewind()
        qnet, report = quantize_mxnet(tiny['net'], reader, SHAPE, keep_first_last=keep)
        records[name] = save_mxnet_int8(qnet, str(tmp_path / name), report)[2]  # the sidecar
    eight, thirty_two = score('--bits', '8')['score'], score('--bits', '32')['score']
    # every conv int8: exactly the 8-bit scenario (conv weights and products at 8 bit, the rest 32)
    assert score('--quant-record', records['all'])['score'] == pytest.approx(eight, rel=1e-12)
    # first conv and classifier FP32: a little above it, far below 32 bit
    default = score('--quant-record', records['default'])
    assert default['bits'] == 'graph' and eight < default['score'] < 0.5 * thirty_two
    other = _arch('33333333333333333333:99999999999999999999')
    other_path = str(tmp_path / 'other.json')
    other.save(other_path)
    result = CliRunner().invoke(score_cli, ['micronet', other_path, '--quant-record',
                                            records['all']])
    assert result.exit_code == 2 and 'score the model it was made from' in result.stderr


@pytest.mark.slow
def test_mxnet_entropy_calibration_runs(tiny, monkeypatch):
    """MXNet 1.9.1 gives fused conv+ReLU outputs a negative minimum under entropy calibration
    and then refuses to run them; quantize_mxnet repairs the ranges."""
    import mxnet.contrib.quantization as mxq
    # 1001 histogram bins instead of 8001: the KL search per layer is what takes the time, and
    # the ranges it yields still need the repair
    monkeypatch.setattr(mxq._LayerHistogramCollector.__init__, '__defaults__', (1001, None, None))
    qnet, report = quantize_mxnet(tiny['net'], ArrayReader([tiny['images']]), SHAPE,
                                  calib_mode='entropy')
    assert report.calib_method == 'entropy' and report.num_int8_convs == report.num_convs - 2
    assert np.isfinite(qnet(mx.nd.array(tiny['images'][:4])).asnumpy()).all()


# ------------------------------------------------------------------ onnxruntime


def _count_op(path, op_type):
    import onnx
    return sum(node.op_type == op_type for node in onnx.load(path).graph.node)


def _count_hard_swish(path):
    """Mul(x, HardSigmoid(x)) nodes of an ONNX file."""
    import onnx
    nodes = onnx.load(path).graph.node
    producers = {out: node for node in nodes for out in node.output}
    return sum(1 for node in nodes if node.op_type == 'Mul' and any(
        producers.get(name) is not None and producers[name].op_type == 'HardSigmoid'
        and producers[name].input[0] in node.input for name in node.input))


def _int8_initializer_bytes(path):
    import onnx
    from onnx import numpy_helper
    return sum(numpy_helper.to_array(init).nbytes for init in onnx.load(path).graph.initializer
               if init.data_type == onnx.TensorProto.INT8)


def _odd_conv_widths(path, block=16):
    """Output channel counts of the convolution weights (4-D initializers) of an ONNX file that
    are not multiples of ``block``."""
    import onnx
    return sorted(init.dims[0] for init in onnx.load(path).graph.initializer
                  if len(init.dims) == 4 and init.dims[0] % block)


def _conv_weight_bytes(path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)
    weights = {init.name: init for init in model.graph.initializer}
    return sum(numpy_helper.to_array(weights[node.input[1]]).nbytes
               for node in model.graph.node if node.op_type == 'Conv')


def test_ort_quantizes_every_conv_with_8_bit_weights_in_the_graph(tiny, tmp_path):
    out = str(tmp_path / 'int8.onnx')
    report = quantize_ort(tiny['onnx'], out, ArrayReader([tiny['images']]))
    assert report.coverage == 1.0 and report.settings['per_channel']
    # the graph itself declares the widths that nas-score micronet reads
    convs = [op for op in trace_onnx(out) if op.kind == 'conv']
    assert len(convs) == report.num_convs
    assert {(op.weight_bits, op.act_bits) for op in convs} == {(8, 8)}
    # every conv weight stored in 8 bits: a quarter of the FP32 bytes (plus per-channel zero points)
    int8_bytes, fp32_bytes = _int8_initializer_bytes(out), _conv_weight_bytes(tiny['onnx'])
    assert 0.25 * fp32_bytes <= int8_bytes <= 0.26 * fp32_bytes
    # every hard-swish runs as int8 Add + Mul (its 1/6 folded into a scale), no HardSigmoid left
    hard_swishes = _count_hard_swish(tiny['onnx'])
    assert hard_swishes > 0 and report.ops['Add'] == {'int8': hard_swishes}
    # every SE gate's hard sigmoid folded into its int8 conv: no FP32 op before the Flatten, and
    # one conversion in (the image) and one out (the logits)
    assert _count_op(tiny['onnx'], 'HardSigmoid') > hard_swishes
    assert {op for op, counts in report.ops.items() if 'fp32' in counts} == {'Flatten'}
    assert report.conversions == 2
    with open(sidecar_path(out)) as handle:
        assert json.load(handle)['coverage'] == 1.0
    import onnxruntime as ort
    feed = {'data': tiny['images'][:8]}
    ref = ort.InferenceSession(tiny['onnx']).run(None, feed)[0]
    got = ort.InferenceSession(out).run(None, feed)[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.1


def test_ort_rewrites_compute_the_same_function_in_fp32(tiny, tmp_path):
    """Hard-swish split and SE gates folded, before quantizing: the FP32 outputs stay those of
    the exported graph on real images, and no HardSigmoid is left."""
    import onnx
    import onnxruntime as ort
    from quantization.ort_rewrites import fold_gate_offsets, split_hard_swish
    model = fold_gate_offsets(split_hard_swish(onnx.load(tiny['onnx'])))
    assert not any(node.op_type == 'HardSigmoid' for node in model.graph.node)
    path = str(tmp_path / 'rewritten.onnx')
    onnx.save(model, path)
    feed = {'data': tiny['images'][:8]}
    ref = ort.InferenceSession(tiny['onnx']).run(None, feed)[0]
    assert_parity(ref, ort.InferenceSession(path).run(None, feed)[0], atol=1e-4)


def test_ort_keep_first_last_and_unknown_exclude(tiny, tmp_path):
    out = str(tmp_path / 'int8.onnx')
    report = quantize_ort(tiny['onnx'], out, ArrayReader([tiny['images'][:8]]),
                          keep_first_last=True, calibrate='percentile')
    fp32 = {reason.split()[0]: name for name, reason in report.fp32_layers().items()}
    assert sorted(fp32) == ['classifier', 'first'] and report.calib_method == 'percentile'
    assert fp32['first'].endswith('_convbn0_conv0_fwd')  # the stem conv reads the image
    assert fp32['classifier'].split('_', 1)[1] == 'conv0_fwd'  # the network's own 1x1 output
    convs = [op for op in trace_onnx(out) if op.kind == 'conv']
    assert sorted(op.weight_bits for op in convs) == [8] * report.num_int8_convs + [32] * 2
    with pytest.raises(QuantizationError, match='matches no layer'):
        quantize_ort(tiny['onnx'], str(tmp_path / 'x.onnx'), ArrayReader([tiny['images'][:8]]),
                     exclude=['no_such_layer'])
    assert not os.path.exists(tmp_path / 'x.onnx')


# ------------------------------------------------------------------ CLI: bad input


def _invoke(args):
    return CliRunner().invoke(main, args)


def _assert_user_error(result, folder, before, text):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and text in lines[0], lines
    assert sorted(os.listdir(folder)) == before  # nothing written


@pytest.mark.parametrize('case', ['exclude', 'channels', 'empty', 'size', 'option'])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, case):
    model = [tiny['arch'], '--params', tiny['params']]
    mx_args = ['--backend', 'mxnet', '-o', str(tmp_path / 'q')]
    npy = str(tmp_path / 'calib.npy')
    if case == 'exclude':
        args, text = model + mx_args + ['--calib-data', 'digits', '--exclude', 'nope'], \
            "'nope' matches no layer"
    elif case == 'channels':
        np.save(npy, np.zeros((8, 1, SIZE, SIZE), np.float32))
        args, text = model + mx_args + ['--calib-data', npy], 'shape (8, 1, 32, 32)'
    elif case == 'empty':
        np.save(npy, np.zeros((0, 3, SIZE, SIZE), np.float32))
        args, text = model + mx_args + ['--calib-data', npy], 'non-empty'
    elif case == 'size':  # an ONNX model fixed at 32x32 calibrated with 64x64 images
        args = [tiny['onnx'], '--backend', 'onnxruntime', '-o', str(tmp_path / 'q.onnx'),
                '--calib-data', 'digits', '--input-size', '64']
        text = 'shape (32, 3, 64, 64)'
    else:
        args, text = model + mx_args + ['--calib-data', 'digits', '--calibrate', 'entropy'], \
            '--calibrate is for --backend onnxruntime'
    before = sorted(os.listdir(tmp_path))
    _assert_user_error(_invoke(args), tmp_path, before, text)


# ------------------------------------------------------------------ trained network: accuracy


def _quantize_cli(trained, folder, backend, output, *extra):
    result = _invoke([trained['arch'], '--params', trained['params'], '--backend', backend,
                      '--calib-data', 'digits', '--eval', 'digits', '-o', str(folder / output),
                      '--json', *extra])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_mxnet_int8_keeps_top1_within_one_point(trained, tmp_path):
    result = _quantize_cli(trained, tmp_path, 'mxnet', 'int8')
    evaluation, report = result['evaluation'], result['quantization']
    assert abs(evaluation['top1_fp32'] - trained['top1']) < 0.005  # merged BN = same network
    assert abs(evaluation['top1_int8'] - evaluation['top1_fp32']) <= 0.01
    assert report['num_int8_convs'] == report['num_convs'] - 2  # all but first conv, classifier
    assert len(evaluation['layers']) == report['num_int8_convs']
    assert all(layer['cosine'] > 0.98 for layer in evaluation['layers'])
    assert all(os.path.isfile(path) for path in result['files'])


@pytest.mark.slow
def test_ort_int8_keeps_top1_within_one_point_in_a_third_of_the_file(trained, tmp_path):
    result = _quantize_cli(trained, tmp_path, 'onnxruntime', 'int8.onnx', '--batch-size', '32')
    evaluation, report = result['evaluation'], result['quantization']
    assert abs(evaluation['top1_fp32'] - trained['top1']) < 0.005
    assert abs(evaluation['top1_int8'] - evaluation['top1_fp32']) <= 0.01
    assert report['coverage'] >= 0.9
    assert evaluation['size_int8_bytes'] <= evaluation['size_fp32_bytes'] / 3
    # every int8 conv is compared but the SE gates', whose output now holds the gate
    se_gates = _count_op(trained['onnx'], 'HardSigmoid') - _count_hard_swish(trained['onnx'])
    assert se_gates > 0 and len(evaluation['layers']) == report['num_int8_convs'] - se_gates
    # quantized from the graph nas-export writes, channels padded to 16 (faster int8 kernels):
    # every width but the classifier's 10 classes, which the unpadded export does not have
    assert len(_odd_conv_widths(trained['onnx'])) > 1
    assert _odd_conv_widths(result['files'][0]) == [10]


def test_zoo_model_is_quantized_with_its_stored_weights(tmp_path, tiny_arch):
    """Without --params, a zoo model's verified weights are used, not a random initialisation."""
    import zoo
    from conftest import randomize_bn
    from quantization.pipeline import _load_net
    root = str(tmp_path / 'store')
    zoo.register_model('tiny_q', tiny_arch, root=root)
    trained = zoo.get_model('tiny_q', root=root)
    randomize_bn(trained, seed=5)
    path = str(tmp_path / 'tiny.params')
    trained.save_parameters(path)
    zoo.import_weights('tiny_q', path, root=root)
    net, size = _load_net('tiny_q', None, None, root)
    assert size == 32
    expected = trained._collect_params_with_prefix()
    for name, param in net._collect_params_with_prefix().items():
        np.testing.assert_array_equal(param.data().asnumpy(), expected[name].data().asnumpy())
