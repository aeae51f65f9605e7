"""The latency-limited search benchmark's verdict: which measured winners count as under the
limit within the noise floor (bench/bench_latency_search.py ``score``), on numbers whose answer
is known."""
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench')


def _record(predicted, measured, flagged=False, probe=0.5):
    return {'predicted_ms': predicted, 'median_ms': measured, 'over_limit': flagged,
            'probe_ms': probe, 'predicted_at_measurement_ms': predicted * probe / 0.5}


def test_score_counts_winners_under_the_limit_within_the_noise_floor(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    from bench_latency_search import score
    # limit 10 ms, noise floor 5 %: 9 and 10 are under it, 10.4 only within the noise, 10.6 not;
    # the last one was timed while the probe took 0.55 ms instead of the search's 0.5 ms: the
    # machine was 10 % slower, so it is under the drifted limit 11 ms
    records = [_record(9.9, 9.0), _record(9.5, 10.0), _record(9.8, 10.4),
               _record(10.6, 10.6, flagged=True, probe=0.55)]
    found = score(records, 10.0, 0.05, 0.5)
    assert found['count'] == 4
    assert found['under_limit'] == 0.5
    assert found['under_limit_within_noise'] == 0.75
    assert found['not_flagged'] == 0.75
    assert found['worst_measured_over_limit'] == pytest.approx(1.06)
    assert found['mean_measured_over_limit'] == pytest.approx(1.0)
    ratios = [9.9 / 9.0, 0.95, 9.8 / 10.4, 1.0]
    assert found['predicted_over_measured']['mean'] == pytest.approx(sum(ratios) / 4)
    assert found['predicted_over_measured']['min'] == pytest.approx(9.8 / 10.4)
    assert found['predicted_over_measured']['max'] == pytest.approx(1.1)
    assert found['rescaled_at_measurement_over_measured']['max'] == pytest.approx(1.1)
    assert found['under_drifted_limit_within_noise'] == 1.0
    # without a noise floor only the strict share counts; at the drifted limit 10.4 now fails
    strict = score(records, 10.0, 0.0, 0.5)
    assert strict['under_limit_within_noise'] == 0.5
    assert strict['under_drifted_limit_within_noise'] == 0.75
