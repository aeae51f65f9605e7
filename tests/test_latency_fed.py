"""Latency-table entries timed as blocks run in the deployed graph (issue #15): a block between
``profiling.deploy.Fed``'s convolutions has its channel shuffle folded away, as in a whole network,
so the MXNet deployment graph and the ONNX export of it hold slices, not Gathers; a table entry is
the fed block's time minus the feed's; the correction never fits a falling line."""
import json

import mxnet as mx
import numpy as np
import pytest

from conftest import assert_parity, randomize_bn
from export.deploy import deployment_graph, export_deploy
from export.merge_bn import merge_bn
from export.onnx import export_onnx
from nas.errors import ExportError
from nas.network import OneShotNet
from nas.space import Arch, NUM_POSITIONS
from profiling import latency_table
from profiling.correction import fit_correction
from profiling.deploy import Fed
from profiling.timing import Measurement, Timing

STRIDE_1 = 1  # position 1 follows the first stride-2 unit: its input is shuffled


@pytest.fixture(scope='module')
def unit_net():
    from conftest import SE_PLUS
    space = SE_PLUS.replace(input_size=32, classes=10)
    net = OneShotNet(Arch((3,) * NUM_POSITIONS, (4,) * NUM_POSITIONS, space))
    net.initialize()
    randomize_bn(net)
    _, cin, _, _, height = space.position_layout()[STRIDE_1]
    return net, (2, cin, height, height)


def _ops(sym):
    return [node['op'] for node in json.loads(sym.tojson())['nodes']]


def test_a_lone_shuffled_block_has_no_mxnet_deployment_graph(unit_net):
    """Why Fed exists: alone, the shuffle is a Gather of the graph input."""
    net, shape = unit_net
    with pytest.raises(ExportError, match='Gather'):
        deployment_graph(net.units[STRIDE_1], (1,) + shape[1:])


def test_a_fed_block_deploys_with_slices_and_computes_the_gluon_function(unit_net, tmp_path):
    net, shape = unit_net
    fed = Fed(shape[1], net.units[STRIDE_1])
    fed_shape = (2, 1) + shape[2:]
    x = mx.nd.array(np.random.RandomState(0).standard_normal(fed_shape))
    paths, report = export_deploy(fed, str(tmp_path / 'fed'), (1,) + fed_shape[1:])
    deployed = mx.gluon.SymbolBlock.imports(paths[0], ['data'], paths[1])
    assert_parity(fed(x), deployed(x))
    assert report.ops_after.get('slice_axis', 0) == 2  # the two halves of the shuffle
    assert 'take' not in report.ops_after and 'SwapAxis' not in report.ops_after
    export_onnx(merge_bn(fed, fed_shape), str(tmp_path / 'fed.onnx'), fed_shape,
                channel_block=16)
    import onnx
    ops = [node.op_type for node in onnx.load(str(tmp_path / 'fed.onnx')).graph.node]
    assert 'Gather' not in ops and ops.count('Slice') == 2


def test_the_feed_alone_is_two_convolutions(unit_net):
    _, shape = unit_net
    sym, _, report = deployment_graph(Fed(shape[1]), (1, 1) + shape[2:], fuse=False)
    assert [op for op in _ops(sym) if op != 'null'] == ['Convolution', 'Convolution']


def _measurement(ms):
    timing = Timing(ms, ms, ms, ms, 0.0, 1)
    return Measurement(timing, Timing(0.5, 0.5, 0.5, 0.5, 0.0, 1))


def _block_ms(unit):
    return 4 + len(unit.collect_params().keys()) / 100  # the Xception block has more layers


def test_an_entry_is_the_fed_block_minus_the_feed(tiny_arch, monkeypatch):
    """Stubbed timer: stem 3 ms, head 2, the call 0.25, a feed 1 + its width / 1000, a fed block
    its feed + ``_block_ms``, a whole subnet 0.9 x (the sum) + 0.5: every nas_block input is fed
    from one channel, entries lose their feed, and the correction recovers the line from
    calibration subnets timed with 3 x runs."""
    seen = []

    def fake(items, runs, **kwargs):
        out = []
        for net, shape in items:
            seen.append((type(net).__name__, tuple(shape), runs))
            if isinstance(net, Fed):
                assert shape[1] == 1
                ms = 1 + net.feed.weight.shape[0] / 1000
                ms += _block_ms(net.block) if net.block is not None else 0
            elif isinstance(net, OneShotNet):
                ms = 0.9 * (3 + 1.75 + sum(_block_ms(unit) for unit in net.units)) + 0.5
            else:
                ms = {'ConvBN': 3.0, '_Head': 2.0}.get(type(net).__name__, 0.25)
            out.append(_measurement(ms))
            if kwargs.get('on_result'):
                kwargs['on_result'](len(out) - 1, out[-1])
        return out
    monkeypatch.setattr(latency_table, 'measure_deployed', fake)
    entries = [(p, b, p % 10) for p in range(NUM_POSITIONS) for b in (0, 3)]
    table = latency_table.measure_latency_table(tiny_arch.space, runtime='mxnet', threads=1,
                                                runs=2, warmup=0, chunks=1, entries=entries,
                                                calibration=4)
    ms, units = table['latency_ms'], table['latency_units']
    net = OneShotNet(Arch((3,) * NUM_POSITIONS, (0,) * NUM_POSITIONS, tiny_arch.space))
    assert ms['nas_block'][STRIDE_1][3][STRIDE_1] == pytest.approx(_block_ms(net.units[1]))
    assert units['nas_block'][STRIDE_1][3][STRIDE_1] == pytest.approx(
        2 * _block_ms(net.units[1]))  # probe 0.5 ms
    assert (ms['input_block'], ms['output_block']) == (pytest.approx(3.0), pytest.approx(1.75))
    layout = tiny_arch.space.position_layout()
    assert table['config']['feed_ms'] == [pytest.approx(1 + row[1] / 1000) for row in layout]
    feeds = [shape for name, shape, _ in seen if name == 'Fed']
    assert len(feeds) == len({(row[1], row[4]) for row in layout}) + len(entries)
    correction = table['correction']
    assert correction['model'] == 'line'
    assert (correction['slope'], correction['intercept']) == (pytest.approx(0.9),
                                                              pytest.approx(1.0))  # 0.5 ms
    assert {runs for name, _, runs in seen if name == 'OneShotNet'} == {6}


@pytest.mark.parametrize('measured', [
    [30.0, 29.0, 28.5, 27.0, 26.5, 25.0],  # falling: the cheapest subnet predicted dearest
    [27.0, 27.1, 26.9, 27.2, 27.0, 27.1],  # flat: one constant for every subnet
])
def test_the_correction_fits_no_line_that_ignores_the_table(measured):
    """Noise among calibration subnets of similar size: the line fits it best left-one-out,
    yet the scale is chosen."""
    predicted = np.array([20.0, 21.0, 22.0, 23.0, 24.0, 25.0])
    correction = fit_correction(predicted, np.array(measured))
    assert correction['model'] == 'scale' and correction['slope'] > 1.0
    assert correction['loo_error']['line'] < correction['loo_error']['scale']
