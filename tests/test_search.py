"""The search loop on a synthetic objective (the supernet-backed search is in test_search_cli)."""
import json

import pytest

from nas.errors import SearchError
from nas.search import Constraints, SearchConfig, run_search, pareto_front
from nas.space import SearchSpace

SPACE = SearchSpace(input_size=32, classes=10)


def cost(arch):
    return {'flops': sum(arch.channels) * 10 + sum(arch.blocks), 'params': sum(arch.channels)}


def accuracy(arch):
    # a smooth objective with a known optimum: wide channels on even positions, block 2 everywhere
    score = sum(c for i, c in enumerate(arch.channels) if i % 2 == 0)
    score += sum(3 for b in arch.blocks if b == 2)
    return score / (9 * 10 + 3 * 20)


LIMITS = Constraints(max_flops=900, max_params=90)


def test_all_candidates_legal_and_results_written(tmp_path):
    config = SearchConfig(strategy='genetic', population=12, generations=4, elite=4, seed=1)
    top = run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path))
    history = json.load(open(tmp_path / 'candidates.json'))
    assert len(history) >= 12 and len({c['arch'] for c in history}) == len(history)
    for cand in history:
        assert cand['costs']['flops'] <= 900 and cand['costs']['params'] <= 90
    assert [c.top1 for c in top] == sorted((c['top1'] for c in history), reverse=True)[:3]
    assert (tmp_path / 'candidates.csv').read_text().startswith('order,generation,arch,top1')


def test_block_mode_freezes_channels(tmp_path):
    config = SearchConfig(strategy='random', space='block', random_iters=5,
                          fixed_channels=(3,) * 20)
    run_search(SPACE, config, Constraints(), cost, accuracy, str(tmp_path))
    for cand in json.load(open(tmp_path / 'candidates.json')):
        assert cand['arch'].endswith(':' + '3' * 20)


def test_same_seed_same_result_and_resume_after_kill(tmp_path):
    config = SearchConfig(strategy='genetic', population=10, generations=5, elite=3, seed=7)
    full = run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path / 'a'))
    again = run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path / 'b'))
    assert full == again

    calls = []

    def dying(arch):
        calls.append(arch)
        if len(calls) == 23:
            raise KeyboardInterrupt  # stands in for a kill in the middle of a generation
        return accuracy(arch)

    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, config, LIMITS, cost, dying, str(tmp_path / 'c'))
    with pytest.raises(SearchError, match='--resume'):
        run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path / 'c'))
    resumed = run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path / 'c'),
                         resume=True)
    assert resumed == full
    assert json.load(open(tmp_path / 'c' / 'candidates.json')) == \
        json.load(open(tmp_path / 'a' / 'candidates.json'))


def test_infeasible_constraints_fail_fast(tmp_path):
    config = SearchConfig(strategy='random', random_iters=3, max_attempts=200)
    with pytest.raises(SearchError, match='infeasible'):
        run_search(SPACE, config, Constraints(max_flops=-1), cost, accuracy, str(tmp_path))


def test_genetic_beats_random_on_synthetic_objective(tmp_path):
    wins = 0
    for seed in range(3):
        genetic = SearchConfig(strategy='genetic', population=20, generations=8, elite=5,
                               seed=seed)
        run_search(SPACE, genetic, Constraints(), cost, accuracy, str(tmp_path / ('g%d' % seed)))
        evaluated = len(json.load(open(tmp_path / ('g%d' % seed) / 'candidates.json')))
        random_cfg = SearchConfig(strategy='random', random_iters=evaluated, seed=seed)
        best_random = run_search(SPACE, random_cfg, Constraints(), cost, accuracy,
                                 str(tmp_path / ('r%d' % seed)))[0].top1
        best_genetic = json.load(open(tmp_path / ('g%d' % seed) / 'topk.json'))[0]['top1']
        wins += best_genetic > best_random
    assert wins == 3


def test_pareto_front_is_non_dominated(tmp_path):
    config = SearchConfig(strategy='random', random_iters=30, seed=3)
    run_search(SPACE, config, Constraints(), cost, accuracy, str(tmp_path))
    from nas.search import Candidate
    history = [Candidate(**c) for c in json.load(open(tmp_path / 'candidates.json'))]
    front = pareto_front(history, 'flops')
    for cand in history:  # every candidate off the front is dominated by one on it
        assert cand in front or any(f.top1 >= cand.top1 and f.costs['flops'] <= cand.costs['flops']
                                    for f in front)
    assert all(a.costs['flops'] <= b.costs['flops'] and a.top1 < b.top1
               for a, b in zip(front, front[1:]))


def test_bad_config_is_a_clear_error():
    with pytest.raises(SearchError, match='strategy'):
        SearchConfig(strategy='evolve')
    with pytest.raises(SearchError, match='elite'):
        SearchConfig(population=5, elite=6)


def test_ties_go_to_the_cheaper_architecture(tmp_path):
    config = SearchConfig(strategy='random', random_iters=12, seed=4)
    top = run_search(SPACE, config, Constraints(), cost, lambda arch: 0.5, str(tmp_path))
    history = json.load(open(tmp_path / 'candidates.json'))
    assert top[0].costs['flops'] == min(c['costs']['flops'] for c in history)
