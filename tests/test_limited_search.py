"""Searches limited by predicted latency or by the MicroNet score succeed: every candidate they
evaluate keeps the limit, its recorded cost is the predictor's own value, and the limit binds
(random draws above it are counted as illegal)."""
import json
from dataclasses import asdict

import pytest

from nas.constraints import Constraints
from nas.network import OneShotNet
from nas.search import SearchConfig
from nas.search_run import search_supernet
from nas.space import NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES, Arch, SearchSpace

SPACE = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=32, classes=10)
BLOCKS = (0, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0, 1, 2, 2, 1, 2, 0, 0, 2, 0)  # OneShot-S+


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """An untrained supernet at 32 x 32: legality reads costs only."""
    folder = tmp_path_factory.mktemp('supernet')
    supernet = OneShotNet(space=SPACE)
    supernet.initialize()
    supernet.save_parameters(str(folder / 'supernet.params'))
    (folder / 'space.json').write_text(json.dumps(asdict(SPACE)))
    return str(folder)


def _entry_units(channel):
    return (channel + 1) ** 2 / 1000.0  # wider is slower, with a wide spread


def _write_table(path):
    """A complete table in the format ``nas-profile --latency-table`` writes, for this machine
    and runtime, with made-up times (probe 1 ms: predictions in ms equal the units)."""
    from profiling.latency_table import TABLE_KIND, TABLE_VERSION
    from profiling.timing import cpu_model, runtime_version

    def grid():
        return {'input_block': 0.01, 'output_block': 0.01,
                'nas_block': [[[_entry_units(c) for c in range(NUM_SCALES)]
                               for _ in range(NUM_BLOCKS)] for _ in range(NUM_POSITIONS)]}
    config = {'runtime': 'onnxruntime', 'precision': 'fp32',
              'runtime_version': runtime_version('onnxruntime'), 'threads': 2, 'batch_size': 1,
              'input_size': SPACE.input_size, 'cpu': cpu_model(), 'space_key': SPACE.key(),
              'space': asdict(SPACE), 'runs': 20, 'warmup': 5, 'chunks': 4, 'window_s': 0.005,
              'flush_bytes': 0, 'call_overhead_ms': 0.0, 'call_overhead_units': 0.0,
              'build_seconds': 0.0, 'probe': {'median_ms': 1.0, 'spread': 0.0,
                                              'samples_ms': [1.0]}}
    table = {'kind': TABLE_KIND, 'version': TABLE_VERSION, 'config': config,
             'latency_ms': grid(), 'latency_units': grid(), 'correction': None}
    path.write_text(json.dumps(table))
    return str(path)


def _search(run_dir, out, constraints, iterations=10, **callables):
    config = SearchConfig(strategy='random', space='channel', fixed_blocks=BLOCKS,
                          random_iters=iterations, seed=1)
    top, summary = search_supernet(run_dir, str(out), config, constraints, batch_size=16,
                                   recalib_batches=0, val_batches=1, **callables)
    history = json.load(open(out / 'candidates.json'))
    assert top and history, 'the search found no legal candidate'
    assert summary['illegal_draws'] > 0, 'the limit did not bind'
    return [Arch.parse(c['arch'], SPACE) for c in history], history


def test_latency_limited_search_keeps_the_limit(run_dir, tmp_path):
    from profiling.verify import latency_predictor
    # rescale=False: the table's probe time, so that the prediction does not depend on the load
    predictor = latency_predictor(_write_table(tmp_path / 'latency.json'), 'onnxruntime',
                                  SPACE, rescale=False)
    limit = 0.75  # about the middle of random draws (mean 0.79 ms, deviation 0.15 ms)
    archs, history = _search(run_dir, tmp_path / 'out', Constraints(max_latency_ms=limit),
                             latency=predictor, latency_floor=predictor.floor(SPACE))
    for arch, cand in zip(archs, history):
        expected = 0.02 + sum(_entry_units(c) for c in arch.channels)
        assert cand['costs']['latency_ms'] == pytest.approx(expected, rel=1e-9)
        assert cand['costs']['latency_ms'] <= limit


def test_the_fresh_probe_is_read_between_the_tables_calibration_subnets(tmp_path, monkeypatch):
    """The search rescales by the probe as the correction and the verification read it: between
    whole subnets (the first of the table's calibration subnets), not timed alone."""
    import profiling.deploy as deploy
    from profiling.latency_table import calibration_archs, load_latency_table
    from profiling.timing import Measurement, Timing
    from profiling.verify import latency_predictor
    path = _write_table(tmp_path / 'latency.json')
    seen = {}

    def stub(items, runtime, precision, threads, **settings):
        seen['items'] = list(items)
        seen['setting'] = (runtime, precision, threads, settings['probe_size'])
        return [Measurement(Timing(2.0, 2.0, 2.0, 2.0, 0.0, 8), Timing(ms, ms, ms, ms, 0.0, 8))
                for ms in (0.9, 1.3, 1.0)]
    monkeypatch.setattr(deploy, 'measure_deployed', stub)
    predictor = latency_predictor(path, 'onnxruntime', SPACE)
    assert predictor.probe_ms == pytest.approx(1.0)  # the median of the three probe readings
    expected = calibration_archs(load_latency_table(path), deploy.PROBE_SUBNETS)
    assert [net.arch for net, _ in seen['items']] == expected
    assert [shape for _, shape in seen['items']] == [(1, 3, 32, 32)] * 3
    assert seen['setting'] == ('onnxruntime', 'fp32', 2, 32)
    arch = expected[0]
    units = 0.02 + sum(_entry_units(c) for c in arch.channels)
    assert predictor(arch) == pytest.approx(1.0 * units)  # the table's units x the fresh probe


def test_micronet_limited_search_keeps_the_limit(run_dir, tmp_path):
    from profiling.scores import micronet_score
    shape = (1, 3, SPACE.input_size, SPACE.input_size)

    def score(arch):
        return micronet_score(OneShotNet(arch), shape, bits=16).score
    limit = score(Arch(BLOCKS, (5,) * NUM_POSITIONS, SPACE))  # the middle width everywhere
    archs, history = _search(run_dir, tmp_path / 'out', Constraints(max_micronet=limit),
                             iterations=6, micronet=score)
    for arch, cand in zip(archs, history):
        assert cand['costs']['micronet'] == pytest.approx(score(arch), rel=1e-9)
        assert cand['costs']['micronet'] <= limit
