"""A group of networks whose runs were disturbed (a co-tenant's burst) is timed again after the
other groups and its steadiest timing kept (``profiling.deploy.measure_deployed``); the
measurements say so."""
import pytest

from profiling import deploy
from profiling.timing import Measurement, Timing


def _measurement(spread):
    return Measurement(Timing(8.0, 9.0, 8.2, 7.5, spread, 36), Timing(3.7, 3.8, 3.7, 3.6, 0.02, 36))


@pytest.fixture
def timed(monkeypatch):
    """measure_deployed with the writing stubbed and measure_models replaced by a script of
    spreads, one list per call; returns (run, calls)."""
    calls = []
    monkeypatch.setattr(deploy, 'write_probe',
                        lambda runtime, folder, *args: ('probe.onnx', (1, 3, 8, 8)))
    monkeypatch.setattr(deploy, 'write_deployed', lambda net, shape, *args: '%s.onnx' % net)

    def run(script, count, group):
        script = iter(script)

        def fake(batch, *args, **kwargs):
            calls.append([model for model, _ in batch])
            spreads = next(script)
            return [_measurement(spreads[i % len(spreads)]) for i in range(len(batch))]
        monkeypatch.setattr(deploy, 'measure_models', fake)
        seen = []
        results = deploy.measure_deployed(
            [('net%d' % i, (1, 3, 8, 8)) for i in range(count)], 'onnxruntime', 'fp32', 2,
            group=group, on_result=lambda index, m: seen.append(index))
        assert sorted(seen) == list(range(count))  # a re-timed group's come later
        return results
    return run, calls


def test_a_steady_group_is_timed_once(timed):
    run, calls = timed
    results = run([[0.03, 0.05], [0.04]], count=4, group=2)
    assert len(calls) == 2 and [m.timings for m in results] == [1, 1, 1, 1]


def test_a_disturbed_group_is_timed_again_and_the_steady_timing_kept(timed):
    run, calls = timed
    results = run([[0.4, 0.3], [0.02], [0.05, 0.03]], count=3, group=2)
    assert calls == [['net0.onnx', 'net1.onnx'], ['net2.onnx'], ['net0.onnx', 'net1.onnx']]
    assert [m.timings for m in results] == [2, 2, 1]
    assert [m.timing.spread for m in results] == [0.05, 0.03, 0.02]


def test_a_group_disturbed_every_time_keeps_its_steadiest_of_three(timed):
    run, calls = timed
    results = run([[0.4], [0.2], [0.3]], count=2, group=2)
    assert len(calls) == 1 + deploy.RETIMES == 3
    assert [m.timing.spread for m in results] == [0.2, 0.2]
    assert results[0].timings == 3 and results[0].to_dict()['timings'] == 3


def test_disturbed_is_the_median_spread_over_the_threshold():
    limit = deploy.DISTURBED_SPREAD
    assert not deploy.disturbed([_measurement(s) for s in (0.02, limit, 0.9)])
    assert deploy.disturbed([_measurement(s) for s in (0.02, 1.1 * limit, 0.9)])


def test_the_probe_is_written_in_the_networks_precision_at_the_size_asked(monkeypatch):
    """An INT8 table's probe is INT8; one precision can be asked for the probe alone (the
    table's call-overhead graph is FP32, its probe the table's)."""
    calls = []
    monkeypatch.setattr(deploy, 'write_probe',
                        lambda runtime, folder, *args: calls.append(args) or ('p.onnx', (1,)))
    monkeypatch.setattr(deploy, 'write_deployed', lambda net, shape, *args: '%s.onnx' % net)
    monkeypatch.setattr(deploy, 'measure_models',
                        lambda batch, *args, **kwargs: [_measurement(0.02) for _ in batch])
    deploy.measure_deployed([('net', (1, 3, 8, 8))], 'onnxruntime', 'int8', 2, probe_size=32)
    deploy.measure_deployed([('net', (1, 3, 8, 8))], 'onnxruntime', 'fp32', 2,
                            probe_precision='int8')
    assert calls == [('int8', 32), ('int8', deploy.PROBE_SIZE)]
