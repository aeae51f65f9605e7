"""ONNX export: onnxruntime vs MXNet, opsets, graph hygiene, hard-swish form, atomic writing."""
import collections
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import assert_parity, digits_images, gluoncv_on_images, image_statistics
from export.merge_bn import merge_bn
from export.onnx import SUPPORTED_OPSETS, export_onnx, fold_constants, graph_passes
from nas.errors import ExportError
from toy_nets import TOY_HSIGMOID_SITES, TOY_HSWISH_SITES, TOY_SHAPE, toy_net

SPEC_OPSETS = range(11, 18)  # the opsets the SPEC asks for


@pytest.fixture(scope='module')
def net():
    return toy_net()


def _run(path, x, one_at_a_time=False):
    """onnxruntime's outputs for the batch ``x``, in one run or input by input (a graph fixed
    at batch 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    if one_at_a_time:
        return np.concatenate([session.run(None, {'data': x[i:i + 1]})[0]
                               for i in range(len(x))])
    return session.run(None, {'data': x})[0]


def _check_parity(net, path, batch, one_at_a_time=False):
    x = np.random.default_rng(batch).normal(size=(batch,) + TOY_SHAPE[1:]).astype(np.float32)
    assert_parity(net(mx.nd.array(x)), _run(path, x, one_at_a_time))


def _ops(path):
    return collections.Counter(node.op_type for node in onnx.load(path).graph.node)


def _hard_swish_muls(path):
    """Mul(x, HardSigmoid(x, 1/6, 0.5)) sites of a graph."""
    graph = onnx.load(path).graph
    sigmoids = {node.output[0]: node for node in graph.node if node.op_type == 'HardSigmoid'}
    count = 0
    for node in graph.node:
        if node.op_type != 'Mul':
            continue
        for data, gate in (node.input[:], node.input[::-1]):
            sig = sigmoids.get(gate)
            if sig is not None and sig.input[0] == data:
                attrs = {a.name: a.f for a in sig.attribute}
                assert attrs == pytest.approx({'alpha': 1 / 6, 'beta': 0.5})
                count += 1
    return count


def test_batch1_parity_and_report(net, tmp_path):
    path = str(tmp_path / 'toy.onnx')
    report = export_onnx(net, path, TOY_SHAPE)
    _check_parity(net, path, 4, one_at_a_time=True)
    model = onnx.load(path)
    assert report.opset == 13
    assert [op.version for op in model.opset_import if op.domain == ''] == [13]
    assert report.size_bytes == os.path.getsize(path)
    assert report.node_count == len(model.graph.node)
    assert report.inputs == {'data': TOY_SHAPE}
    assert list(report.outputs.values()) == [(1, 10)]
    assert report.op_counts == dict(_ops(path))
    assert len(report.checks) == 2


def test_dynamic_batch_parity_at_1_and_8(net, tmp_path):
    path = str(tmp_path / 'toy.onnx')
    report = export_onnx(net, path, TOY_SHAPE, dynamic_batch=True)
    assert report.inputs == {'data': ('N',) + TOY_SHAPE[1:]}
    assert list(report.outputs.values()) == [('N', 10)]
    _check_parity(net, path, 4, one_at_a_time=True)  # batch 1, four times
    _check_parity(net, path, 8)


@pytest.mark.parametrize('dynamic_batch', [False, True])
@pytest.mark.parametrize('opset', sorted(set(SPEC_OPSETS) | set(SUPPORTED_OPSETS)))
def test_each_supported_opset_exports_and_runs(net, tmp_path, opset, dynamic_batch):
    path = str(tmp_path / 'toy.onnx')
    export_onnx(net, path, TOY_SHAPE, opset=opset, dynamic_batch=dynamic_batch)
    _check_parity(net, path, 2, one_at_a_time=not dynamic_batch)
    model = onnx.load(path)
    assert [op.version for op in model.opset_import if op.domain == ''] == [opset]
    weights = {init.name for init in model.graph.initializer}
    assert [v.name for v in model.graph.input] == ['data'] and weights
    assert 'Identity' not in _ops(path)





@pytest.mark.parametrize('opset', [SUPPORTED_OPSETS[0] - 1, SUPPORTED_OPSETS[-1] + 1])
def test_unsupported_opset_is_refused_with_the_range(net, tmp_path, opset):
    path = tmp_path / 'toy.onnx'
    with pytest.raises(ExportError, match='opset %d is not supported; choose one of 11' % opset):
        export_onnx(net, str(path), TOY_SHAPE, opset=opset)
    assert not path.exists()


class _Reduce(mx.gluon.HybridBlock):
    """MXNet translates sum/expand_dims/squeeze with opset-13 forms (axes as an input)."""

    def hybrid_forward(self, F, x):
        return F.squeeze(F.expand_dims(F.sum(x, axis=1, keepdims=True), axis=0), axis=(0, 2))


@pytest.mark.parametrize('opset', [11, 12])
def test_opset_that_lacks_an_operator_form_fails_clearly(tmp_path, opset):
    path = tmp_path / 'r.onnx'
    message = r'opset %d lacks \(.*ReduceSum.*\); export at opset 13' % opset
    with pytest.raises(ExportError, match=message):
        export_onnx(_Reduce(), str(path), (1, 3, 8, 8), opset=opset)
    assert not path.exists()
    report = export_onnx(_Reduce(), str(path), (1, 3, 8, 8), opset=13)
    assert report.op_counts == {'ReduceSum': 1, 'Unsqueeze': 1, 'Squeeze': 1}


def test_hard_swish_form_follows_the_opset(net, tmp_path):
    path13, path14 = str(tmp_path / 'o13.onnx'), str(tmp_path / 'o14.onnx')
    export_onnx(net, path13, TOY_SHAPE, opset=13)
    export_onnx(net, path14, TOY_SHAPE, opset=14)
    assert _ops(path13)['HardSwish'] == 0
    assert _hard_swish_muls(path13) == TOY_HSWISH_SITES
    assert _ops(path14)['HardSwish'] == TOY_HSWISH_SITES
    assert _hard_swish_muls(path14) == 0 and _ops(path14)['HardSigmoid'] == TOY_HSIGMOID_SITES


@pytest.mark.parametrize('name', ['mobilenetv3_small', 'mobilenetv2_1.0'])
def test_gluoncv_parity_and_hard_swish_sites(tmp_path, name):
    """gluoncv writes hard-swish as x * (clip(x + 3, 0, 6) / 6): it must become the same nodes."""
    gnet = gluoncv_on_images(name, 64)
    from gluoncv.nn import HardSwish
    shape = (1, 3, 64, 64)
    sites = []
    gnet.apply(lambda block: sites.append(block) if isinstance(block, HardSwish) else None)
    x = digits_images(64, 2)
    ref = gnet(mx.nd.array(x)).asnumpy()
    for opset in (13, 14):
        path = str(tmp_path / ('%d.onnx' % opset))
        export_onnx(gnet, path, shape, opset=opset)
        assert_parity(ref, _run(path, x, one_at_a_time=True),
                      atol=1e-4 * max(1.0, np.abs(ref).max()))
        if sites:  # every clip(x + 3, 0, 6) / 6 was fused (mobilenetv2's ReLU6 stays a Clip)
            assert _ops(path)['Clip'] == _ops(path)['Div'] == 0
        assert _ops(path)['HardSwish'] == (len(sites) if opset == 14 else 0)
        assert _hard_swish_muls(path) == (len(sites) if opset == 13 else 0)


def test_merged_net_exports_without_batchnorm(net, tmp_path):
    path = str(tmp_path / 'merged.onnx')
    export_onnx(merge_bn(net, TOY_SHAPE), path, TOY_SHAPE, opset=14)
    assert _ops(path)['BatchNormalization'] == 0 and _ops(path)['Conv'] == 8
    _check_parity(net, path, 2, one_at_a_time=True)


def test_shape_computation_folds_only_when_static(net, tmp_path):
    static, dynamic = str(tmp_path / 's.onnx'), str(tmp_path / 'd.onnx')
    export_onnx(net, static, TOY_SHAPE, shuffle='reshape')  # the shuffle as MXNet traced it
    export_onnx(net, dynamic, TOY_SHAPE, dynamic_batch=True, shuffle='reshape')
    # the shuffle's swapaxes/reshape_like shape arithmetic is constant only for a fixed batch
    assert {'Shape', 'GatherND', 'ScatterND', 'Pad'}.isdisjoint(_ops(static))
    assert _ops(static)['Reshape'] == 2 and _ops(static)['Transpose'] == 1
    assert _ops(dynamic)['Shape'] > 0


def test_passes_leave_their_input_untouched(net, tmp_path):
    path = str(tmp_path / 'toy.onnx')
    export_onnx(net, path, TOY_SHAPE, dynamic_batch=True)
    model = onnx.load(path)
    before = model.SerializeToString()
    for graph_pass in graph_passes(14, dynamic_batch=True):
        graph_pass(model)
    assert model.SerializeToString() == before
    assert fold_constants(model).SerializeToString() == before  # nothing more to fold


def test_unwritable_path_is_an_export_error_and_writes_nothing(net, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    with pytest.raises(ExportError, match='cannot write'):
        export_onnx(net, str(blocker / 'toy.onnx'), TOY_SHAPE)
    with pytest.raises(ExportError, match='cannot write'):
        export_onnx(net, str(tmp_path / 'absent' / 'toy.onnx'), TOY_SHAPE)
    assert os.listdir(tmp_path) == ['file']


def test_failure_while_placing_the_file_leaves_nothing(net, tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError('read-only file system')

    monkeypatch.setattr(os, 'replace', refuse)
    with pytest.raises(ExportError, match='read-only'):
        export_onnx(net, str(tmp_path / 'toy.onnx'), TOY_SHAPE)
    assert os.listdir(tmp_path) == []


def test_unconvertible_op_is_an_export_error(tmp_path):
    class Unsupported(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x):
            return F.reshape(x, shape=(-3, -2))  # MXNet's converter rejects codes -2/-3/-4 here

    with pytest.raises(ExportError, match="MXNet's ONNX converter cannot convert"):
        export_onnx(Unsupported(), str(tmp_path / 'u.onnx'), TOY_SHAPE)
    assert os.listdir(tmp_path) == []


@pytest.mark.integration
@pytest.mark.parametrize('opset', [13, 14])
def test_oneshot_subnet_parity(tiny_arch, tmp_path, opset):
    from nas.network import OneShotNet
    net = OneShotNet(tiny_arch)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    image_statistics(net, digits_images(32, 64, offset=100), seed=6)  # input-dependent logits
    path = str(tmp_path / 'oneshot.onnx')
    report = export_onnx(net, path, (1, 3, 32, 32), opset=opset, dynamic_batch=True)
    x = digits_images(32, 4)
    assert_parity(net(mx.nd.array(x)), _run(path, x), rel=1e-4)  # float32 through 20 units
    from nas.blocks import HardSwish
    sites = []
    net.apply(lambda block: sites.append(block) if isinstance(block, HardSwish) else None)
    assert (_ops(path)['HardSwish'] if opset == 14 else _hard_swish_muls(path)) == len(sites) > 0
    assert report.op_counts.get('Identity', 0) == 0
