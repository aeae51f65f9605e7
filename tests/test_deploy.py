"""The MXNet deployment graph (``export.deploy``, ``nas-export --mxnet``): the same function as the
Gluon network on real images, in fewer, fused operators, loadable with plain
``SymbolBlock.imports``; and every deployment graph keeps the trained network's top-1."""
import collections
import json

import mxnet as mx
import numpy as np
import pytest

from conftest import assert_parity, digits_images, digits_split, gluoncv_on_images
from export.deploy import _PLAIN_ONLY, deployment_graph, export_deploy, to_mxnet
from export.merge_bn import merge_bn
from export.onnx import export_onnx
from nas.errors import ExportError

SIZE = 32


def _load(paths):
    return mx.gluon.SymbolBlock.imports(paths[0], ['data'], paths[1])


def test_digits_net_files_match_the_network_with_the_shuffle_in_the_weights(digits_net, tmp_path):
    shape = (1, 3, SIZE, SIZE)
    paths, report = export_deploy(digits_net, str(tmp_path / 'net'), shape)
    images = digits_images(SIZE, 16)
    assert_parity(digits_net(mx.nd.array(images)), _load(paths)(mx.nd.array(images)))
    for traced in ('BatchNorm', 'SwapAxis', 'reshape_like'):  # BN and the shuffle's reshapes
        assert report.ops_before[traced] > 0 and traced not in report.ops_after
    convs = report.ops_before['Convolution']
    assert report.fused_convs == convs and 'Convolution' not in report.ops_after
    assert sum(report.ops_after.values()) < sum(report.ops_before.values())


def test_gluoncv_residuals_and_hard_swish_translate(tmp_path):
    net = gluoncv_on_images('mobilenetv3_small', 64)
    shape = (1, 3, 64, 64)
    paths, report = export_deploy(net, str(tmp_path / 'mnv3'), shape)
    images = digits_images(64, 4, offset=200)
    assert_parity(net(mx.nd.array(images)), _load(paths)(mx.nd.array(images)))
    assert 'BatchNorm' not in report.ops_after


def test_an_operator_without_translation_is_refused_in_one_line():
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('Erf', ['x'], ['y'])], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    with pytest.raises(ExportError, match='Erf node .*--no-optimize'):
        to_mxnet(model)


def _top1(predict, images, labels):
    return float((predict(images).argmax(1) == labels).mean())


@pytest.mark.slow
def test_every_deployment_graph_keeps_top1_within_one_point(digits_net, tmp_path):
    from quantization.calib import ArrayReader
    from quantization.mxnet_int8 import quantize_mxnet
    from quantization.ort_int8 import quantize_ort
    from profiling.timing import ort_session
    images, labels = digits_split(SIZE, 'val')
    calib = [digits_split(SIZE, 'train')[0][:64]]
    shape = (1, 3, SIZE, SIZE)
    reference = _top1(lambda x: digits_net(mx.nd.array(x)).asnumpy(), images, labels)
    fp32 = _load(export_deploy(digits_net, str(tmp_path / 'fp32'), shape)[0])
    qnet, _ = quantize_mxnet(digits_net, ArrayReader(calib), shape)
    onnx_path, int8_path = str(tmp_path / 'fp32.onnx'), str(tmp_path / 'int8.onnx')
    export_onnx(merge_bn(digits_net, shape), onnx_path, shape, dynamic_batch=True,
                channel_block=16)
    quantize_ort(onnx_path, int8_path, ArrayReader(calib))
    session = ort_session(int8_path, 2)
    graphs = {
        'mxnet_fp32': lambda x: fp32(mx.nd.array(x)).asnumpy(),
        'mxnet_int8': lambda x: qnet(mx.nd.array(x)).asnumpy(),
        'ort_int8': lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]}
    found = {name: _top1(predict, images, labels) for name, predict in graphs.items()}
    assert all(abs(top1 - reference) <= 0.01 for top1 in found.values()), (reference, found)


def test_unfused_graph_is_the_fused_graph_before_partitioning(digits_net):
    shape = (1, 3, SIZE, SIZE)
    sym, params, report = deployment_graph(digits_net, shape, fuse=False)
    assert 'Convolution' in report.ops_after and '_sg_mkldnn_conv' not in report.ops_after
    assert set(params) == set(sym.list_arguments()) - {'data'}
    assert all(isinstance(value, np.ndarray) for value in params.values())


def _conv_filters(nodes):
    return [int(inner['attrs']['num_filter']) for node in nodes if node['op'] == '_sg_mkldnn_conv'
            for inner in node['subgraphs'][0]['nodes'] if inner['op'] == 'Convolution']


def test_channels_are_padded_to_onednn_blocks_and_blocked_outputs_converted_once(digits_net):
    shape = (1, 3, SIZE, SIZE)
    graphs = {block: json.loads(deployment_graph(digits_net, shape, channel_block=block)[0]
                                .tojson())['nodes'] for block in (0, 16)}
    blocked = {block: np.mean([f % 16 == 0 for f in _conv_filters(nodes)])
               for block, nodes in graphs.items()}
    assert blocked[0] < 0.9 and blocked[16] > 0.98  # the searched widths padded (a few stay)
    nodes = graphs[16]
    readers = collections.defaultdict(list)
    for node in nodes:
        for index, _, _ in node['inputs']:
            readers[index].append(node['op'])
    copies = [index for index, node in enumerate(nodes) if node['op'] == 'Reshape']
    assert copies
    for index in copies:  # a blocked conv output read by several plain-only ops, converted once
        [(source, _, _)] = nodes[index]['inputs']
        assert nodes[source]['op'] == '_sg_mkldnn_conv'
        assert sum(op in _PLAIN_ONLY for op in readers[index]) >= 2
        assert not any(op in _PLAIN_ONLY for op in readers[source])
    for index, node in enumerate(nodes):
        if node['op'] == '_sg_mkldnn_conv':
            assert sum(op in _PLAIN_ONLY for op in readers[index]) <= 1
