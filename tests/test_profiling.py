"""Op-by-op profiling, the latency table and the predictor (issue 7), on 32x32 subnets."""
import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from nas.counting import count_net
from nas.errors import DependencyError, ProfilingError
from nas.network import OneShotNet
from nas.space import Arch, SearchSpace, NUM_POSITIONS
from profiling import plots
from cli.profile import main
from profiling.latency_table import (load_latency_table, measure_latency_table,
                                     missing_entries, predict_latency, table_entries)
from profiling.op_by_op import profile_op_by_op
from profiling.timing import check_runtime, cpu_model, summarize

SIZE = 32


def _tiny_net(arch):
    net = OneShotNet(arch)
    net.initialize()
    return net


@pytest.fixture(scope='module')
def arch():
    """``tiny_arch`` of conftest, shared by the module's expensive fixtures."""
    rng = np.random.RandomState(7)
    return Arch(tuple(rng.randint(0, 4, 20)), tuple(rng.randint(0, 10, 20)),
                SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=SIZE,
                            classes=10))


@pytest.fixture(scope='module', params=['onnxruntime', 'mxnet'])
def profile(request, arch):
    net = _tiny_net(arch)
    return net, profile_op_by_op(net, input_size=SIZE, runtime=request.param, threads=1,
                                 runs=5, warmup=2, model_name='tiny')


def _conv_counts(net):
    return {layer.name: layer.flops for layer in count_net(net, (3, SIZE, SIZE)).layers
            if layer.op_type == 'Convolution'}


# ---------------------------------------------------------------------------- op by op


def test_every_conv_appears_once_with_the_counters_macs(profile):
    net, prof = profile
    convs = _conv_counts(net)
    carried = [row for row in prof.rows if row.layer in convs]
    assert sorted(row.layer for row in carried) == sorted(convs)  # each conv exactly once
    assert all(row.macs == convs[row.layer] for row in carried)
    assert sum(row.macs for row in prof.rows) == count_net(net, (3, SIZE, SIZE)).flops


def test_every_op_has_a_block_and_totals_follow_the_network(profile, arch):
    _, prof = profile
    expected = ['stem'] + ['units.%d' % i for i in range(NUM_POSITIONS)] + ['head']
    assert list(prof.block_totals()) == expected
    stages = {row.block: row.stage for row in prof.rows}
    assert [stages['units.%d' % i] for i in range(NUM_POSITIONS)] == \
        [arch.space.stage_of(i) + 1 for i in range(NUM_POSITIONS)]
    assert stages['stem'] is None and stages['head'] is None


def test_shares_times_and_gflops_are_consistent(profile):
    _, prof = profile
    assert sum(row.share for row in prof.rows) == pytest.approx(1.0)
    assert sum(prof.block_totals().values()) == pytest.approx(prof.op_sum_ms)
    assert sum(prof.type_totals().values()) == pytest.approx(prof.op_sum_ms)
    for row in prof.rows:
        assert row.time_ms >= 0
        if row.time_ms > 0:
            assert row.gflops == pytest.approx(2 * row.macs / (row.time_ms * 1e6))
        assert row.mean_ms >= 0
    assert prof.coverage == pytest.approx(prof.op_mean_sum_ms / prof.latency.mean_ms)


def test_mxnet_profile_has_every_graph_op_in_graph_order(profile):
    from nas.counting import trace_net
    net, prof = profile
    if prof.runtime != 'mxnet':
        pytest.skip('onnxruntime runs its own optimised graph')
    assert [row.name for row in prof.rows] == [op.name for op in trace_net(net, (3, SIZE, SIZE))]
    # the NaiveEngine runs one op at a time: the ops cannot take longer than the profiled runs
    assert prof.op_mean_sum_ms <= prof.profiled.mean_ms


def test_only_onnxruntime_folds_bn_into_its_convolutions(profile):
    _, prof = profile
    types = prof.type_totals()
    convs = [row for row in prof.rows if row.layer and 'Conv' in row.op_type]
    if prof.runtime == 'onnxruntime':
        assert 'BatchNormalization' not in types
        assert any(row.name != row.layer for row in convs)  # named after the BN it absorbed
    else:
        assert 'BatchNorm' in types
        assert all(row.name == row.layer for row in convs)


def test_json_and_csv_are_machine_readable(profile, tmp_path):
    _, prof = profile
    data = json.loads(open(prof.write_json(str(tmp_path / 'p.json'))).read())
    assert data['runtime'] == prof.runtime and len(data['rows']) == len(prof.rows)
    assert data['op_sum_ms'] == pytest.approx(sum(r['time_ms'] for r in data['rows']))
    with open(prof.write_csv(str(tmp_path / 'p.csv'))) as handle:
        rows = list(csv.DictReader(handle))
    assert [r['name'] for r in rows] == [row.name for row in prof.rows]
    assert [int(r['macs']) for r in rows] == [row.macs for row in prof.rows]
    assert sum(float(r['time_ms']) for r in rows) == pytest.approx(prof.op_sum_ms)


def test_plot_is_a_png_with_one_labelled_bar_per_block(profile, tmp_path, monkeypatch):
    _, prof = profile
    seen = {}
    real_save = plots.save_figure

    def spy(fig, path):
        axis = fig.axes[0]
        seen['labels'] = [t.get_text() for t in axis.get_xticklabels()]
        seen['legend'] = [t.get_text() for t in axis.get_legend().get_texts()]
        return real_save(fig, path)
    monkeypatch.setattr(plots, 'save_figure', spy)
    path = plots.plot_block_times(prof, str(tmp_path / 'p.png'))
    assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert seen['labels'] == list(prof.block_totals())
    assert seen['legend'][0] == next(iter(prof.type_totals()))  # slowest op type first


@pytest.mark.slow
@pytest.mark.parametrize('runtime', ['onnxruntime', 'mxnet'])
def test_op_times_sum_to_end_to_end_latency(runtime):
    """Issue 7: per-op times within 10 % of the measured end-to-end latency (224 input).
    Other processes on the machine can slow single runs, so up to three attempts."""
    from zoo import get_model
    net = get_model('oneshot_plus', input_size=224)
    ratios = []
    for _ in range(3):
        prof = profile_op_by_op(net, input_size=224, runtime=runtime, threads=1, runs=15,
                                warmup=3)
        ratios.append(prof.coverage)
        if abs(prof.coverage - 1) <= 0.10:
            break
    assert abs(ratios[-1] - 1) <= 0.10, ratios


def test_bad_counts_and_runtimes_are_refused(arch):
    net = _tiny_net(arch)
    with pytest.raises(ProfilingError, match='runs must be'):
        profile_op_by_op(net, input_size=SIZE, runs=0)
    with pytest.raises(ProfilingError, match="unknown runtime 'tvm'"):
        profile_op_by_op(net, input_size=SIZE, runtime='tvm')
    with pytest.raises(ProfilingError):
        summarize([])


def test_missing_onnxruntime_is_a_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(DependencyError, match='not installed'):
        check_runtime('onnxruntime')


# ---------------------------------------------------------------------------- latency table

ENTRIES = [(0, 0, 0), (0, 3, 9), (19, 1, 4)]


@pytest.fixture(scope='module')
def small_table(tmp_path_factory, arch):
    path = str(tmp_path_factory.mktemp('lat') / 'table.json')
    table = measure_latency_table(arch.space, runtime='onnxruntime', threads=1, runs=3,
                                  warmup=1, entries=ENTRIES, path=path)
    return path, table


def test_table_records_its_setting_and_measures_only_the_asked_entries(small_table, arch):
    path, table = small_table
    config = table['config']
    assert (config['runtime'], config['threads'], config['batch_size'], config['input_size'],
            config['cpu'], config['space_key']) == \
        ('onnxruntime', 1, 1, SIZE, cpu_model(), arch.space.key())
    latency = table['latency_ms']
    assert latency['input_block'] > 0 and latency['output_block'] > 0
    assert all(latency['nas_block'][p][b][c] > 0 for p, b, c in ENTRIES)
    assert len(missing_entries(table)) == 800 - len(ENTRIES)
    assert json.load(open(path)) == table  # saved as it went


def test_interrupted_table_resumes_with_only_the_missing_entries(tmp_path, arch):
    path = str(tmp_path / 't.json')
    entries = table_entries([1], [0], [0, 5, 9])

    class Interrupt:
        count = 0

        def update(self, n):
            self.count += n
            if self.count == 2:  # stem and the first entry are saved
                raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        measure_latency_table(arch.space, threads=1, runs=2, warmup=0, entries=entries,
                              path=path, progress=Interrupt())
    partial = load_latency_table(path)
    assert len(missing_entries(partial, entries)) == 2

    class Count:
        count = 0

        def update(self, n):
            self.count += n
    counter = Count()
    full = measure_latency_table(arch.space, threads=1, runs=2, warmup=0, entries=entries,
                                 path=path, resume=True, progress=counter)
    assert counter.count == 3  # two entries and the head
    assert not missing_entries(full, entries)
    assert full['latency_ms']['input_block'] == partial['latency_ms']['input_block']


def test_a_table_from_another_setting_or_machine_is_refused(small_table, tmp_path):
    path, table = small_table
    load_latency_table(path, runtime='onnxruntime', threads=1, input_size=SIZE, batch_size=1)
    for key, value in (('runtime', 'mxnet'), ('threads', 2), ('input_size', 64),
                       ('batch_size', 4)):
        with pytest.raises(ProfilingError, match='measured with %s=' % key):
            load_latency_table(path, **{key: value})
    other = dict(table, config=dict(table['config'], cpu='Some Other CPU'))
    other_path = tmp_path / 'other.json'
    other_path.write_text(json.dumps(other))
    with pytest.raises(ProfilingError, match="cpu='Some Other CPU'"):
        load_latency_table(str(other_path))
    assert load_latency_table(str(other_path), allow_other_cpu=True) == other
    bad = tmp_path / 'bad.json'
    bad.write_text('{"flops": 1}')
    with pytest.raises(ProfilingError, match='not a latency table'):
        load_latency_table(str(bad))


def test_prediction_is_stem_plus_head_plus_the_chosen_entries(small_table, arch):
    _, table = small_table
    rng = np.random.RandomState(0)
    filled = json.loads(json.dumps(table))
    values = rng.rand(20, 4, 10)
    filled['latency_ms']['nas_block'] = values.tolist()
    expected = filled['latency_ms']['input_block'] + filled['latency_ms']['output_block'] + \
        sum(values[p, b, c] for p, (b, c) in enumerate(zip(arch.blocks, arch.channels)))
    assert predict_latency(filled, arch) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ProfilingError, match='no entry for position'):
        predict_latency(table, arch)
    with pytest.raises(ProfilingError, match='search space'):
        predict_latency(filled, arch.with_space(input_size=64))


def test_mxnet_table_entries_are_measured_in_the_worker(arch):
    table = measure_latency_table(arch.space, runtime='mxnet', threads=1, runs=2, warmup=1,
                                  entries=[(4, 2, 3)])
    assert table['config']['runtime'] == 'mxnet'
    assert table['latency_ms']['nas_block'][4][2][3] > 0
    assert table['config']['call_overhead_ms'] > 0


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def arch_file(tmp_path, arch):
    path = str(tmp_path / 'tiny.json')
    arch.save(path)
    return path


def _one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and fragment in lines[0], lines


def test_cli_op_by_op_writes_table_json_csv_and_plot(arch_file, tmp_path):
    out = {k: str(tmp_path / ('p.' + k)) for k in ('json', 'csv', 'png')}
    result = CliRunner().invoke(main, ['--op-by-op', arch_file, '--input-size', str(SIZE),
                                       '--threads', '1', '--runs', '3', '--warmup', '1',
                                       '--json', out['json'], '--csv', out['csv'],
                                       '--plot', out['png'], '--quiet'])
    assert result.exit_code == 0, result.output
    assert 'per block:' in result.stdout and 'units.19 (stage 4)' in result.stdout
    assert 'per-op medians sum to' in result.stdout
    rows = json.load(open(out['json']))['rows']
    assert len(rows) == len(open(out['csv']).read().strip().splitlines()) - 1
    assert open(out['png'], 'rb').read(4) == b'\x89PNG'


@pytest.mark.parametrize('args, fragment', [
    (['--runtime', 'tensorrt'], "unknown runtime 'tensorrt'"),
    (['--runs', '0'], 'runs must be'),
])
def test_cli_bad_options_are_one_line_errors(arch_file, args, fragment):
    result = CliRunner().invoke(main, ['--op-by-op', arch_file, '--input-size', str(SIZE),
                                       '--quiet'] + args)
    _one_line_error(result, fragment)


def test_cli_runtime_not_installed(arch_file, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    result = CliRunner().invoke(main, ['--op-by-op', arch_file, '--input-size', str(SIZE),
                                       '--runtime', 'onnxruntime', '--quiet'])
    _one_line_error(result, 'not installed')


def test_cli_non_model_file(tmp_path):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a model\n')
    result = CliRunner().invoke(main, ['--op-by-op', str(notes), '--quiet'])
    _one_line_error(result, 'notes.txt')


def test_cli_latency_table_subset_then_refuses_other_threads(tmp_path):
    path = str(tmp_path / 'table.json')
    base = ['--latency-table', '-o', path, '--input-size', str(SIZE), '--classes', '10',
            '--positions', '0', '--blocks', '0', '--channels', '0,9', '--runs', '2',
            '--warmup', '0', '--threads', '1', '--quiet']
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 0, result.output
    assert '2 of 800 block entries measured (median of 2 runs)' in result.stdout
    assert len(missing_entries(load_latency_table(path))) == 798
    result = CliRunner().invoke(main, base[:-3] + ['--threads', '2', '--resume', '--quiet'])
    _one_line_error(result, 'measured with threads=1')


@pytest.mark.parametrize('args', [[], ['--op-by-op', 'oneshot', '--latency-table'],
                                  ['--latency-table']])
def test_cli_needs_exactly_one_mode(args):
    result = CliRunner().invoke(main, args + ['--quiet'])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
