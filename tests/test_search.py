"""The search loop on a synthetic objective (the supernet-backed search is in test_search_cli)."""
import json

import pytest

from nas.constraints import Constraints
from nas.errors import SearchError, UnknownModelError
from nas.search import SearchConfig, run_search, pareto_front
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
    config = SearchConfig(strategy='random', random_iters=3, max_attempts=200,
                          count_illegal=False)
    with pytest.raises(SearchError, match='infeasible'):
        run_search(SPACE, config, Constraints(max_flops=1), cost, accuracy, str(tmp_path / 'a'))
    counted = SearchConfig(strategy='random', random_iters=3)
    with pytest.raises(SearchError, match='none of the 3 random draws satisfied flops <= 1'):
        run_search(SPACE, counted, Constraints(max_flops=1), cost, accuracy, str(tmp_path / 'b'))


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
    with pytest.raises(SearchError, match='lower elite or raise population'):
        SearchConfig(population=5, elite=6)
    with pytest.raises(SearchError, match='fitness must be one of acc, balanced_flop_acc'):
        SearchConfig(fitness='flops')
    for bad in (0, -1, float('nan')):
        with pytest.raises(SearchError, match='balance_r must be a positive number'):
            SearchConfig(balance_r=bad)
        with pytest.raises(SearchError, match='max_combined must be a positive number'):
            Constraints(max_combined=bad)
    with pytest.raises(UnknownModelError, match='known: SinglePathOneShot, MobileNetV3_large, '
                                                'MobileNetV2_1.4, ShuffleNetV2\\+_medium'):
        Constraints(reference='MobileNetV4')


def test_ties_go_to_the_cheaper_architecture(tmp_path):
    config = SearchConfig(strategy='random', random_iters=12, seed=4)
    top = run_search(SPACE, config, Constraints(), cost, lambda arch: 0.5, str(tmp_path))
    history = json.load(open(tmp_path / 'candidates.json'))
    assert top[0].costs['flops'] == min(c['costs']['flops'] for c in history)


def test_library_defaults_are_the_spec_recipe(tmp_path):
    """SPEC §5.2 from Python with no arguments: population 50, 20 generations, 10 elite,
    mutation 0.1, top-3 (and §5.1: 100 random iterations, illegal draws counted)."""
    import inspect
    from nas.search_run import search_supernet
    config = SearchConfig()
    assert (config.strategy, config.population, config.generations, config.elite,
            config.survive_prob, config.mutation_prob, config.top_k, config.random_iters,
            config.count_illegal, config.fitness) == \
        ('genetic', 50, 20, 10, 0.1, 0.1, 3, 100, True, 'acc')
    assert inspect.signature(search_supernet).parameters['config'].default == config
    top = run_search(SPACE, config, Constraints(), cost, accuracy, str(tmp_path))
    history = json.load(open(tmp_path / 'candidates.json'))
    assert sum(c['generation'] == 0 for c in history) == 50
    assert max(c['generation'] for c in history) == 20 and len(top) == 3
    state = json.load(open(tmp_path / 'search_state.json'))
    assert len(state['population']) == 50 and state['generation'] == 20


def test_elite_default_fits_the_population():
    assert SearchConfig(population=8).elite == 8
    assert SearchConfig(population=30).elite == 10
    assert SearchConfig(population=30, elite=4).elite == 4


def test_random_search_counts_illegal_draws_as_iterations(tmp_path):
    """SPEC §5.1: 100 iterations are 100 draws; the illegal ones are skipped, not redrawn."""
    config = SearchConfig(strategy='random', random_iters=100, seed=2)
    run_search(SPACE, config, LIMITS, cost, accuracy, str(tmp_path / 'counted'))
    summary = json.load(open(tmp_path / 'counted' / 'search.json'))
    history = json.load(open(tmp_path / 'counted' / 'candidates.json'))
    assert 0 < summary['illegal_draws'] < 100 and summary['count_illegal']
    assert summary['evaluated'] == len(history) == 100 - summary['illegal_draws']
    assert summary['rule'] == 'flops <= 900 FLOPs, params <= 90 params'
    redrawn = SearchConfig(strategy='random', random_iters=100, seed=2, count_illegal=False)
    run_search(SPACE, redrawn, LIMITS, cost, accuracy, str(tmp_path / 'redrawn'))
    assert len(json.load(open(tmp_path / 'redrawn' / 'candidates.json'))) == 100


def _real_cost(arch):
    """FLOPs and params on the scale of a 224 x 224 network: 50M-590M, 1M-7M."""
    return {'flops': 50e6 + 3e6 * sum(arch.channels), 'params': 1e6 + 0.1e6 * sum(arch.blocks)}


@pytest.mark.parametrize('ref', ['SinglePathOneShot', 'MobileNetV3_large'])
def test_reference_rule_admits_only_combined_at_most_one(tmp_path, ref):
    ref_flops, ref_params = {'SinglePathOneShot': (328e6, 3.4e6),
                             'MobileNetV3_large': (217e6, 5.4e6)}[ref]
    rule = Constraints(reference=ref, max_flop_ratio=1.2)
    assert rule.max_combined == 1  # the reference's rule when only the model is named
    config = SearchConfig(strategy='random', random_iters=60, seed=1)
    run_search(SPACE, config, rule, _real_cost, accuracy, str(tmp_path))
    history = json.load(open(tmp_path / 'candidates.json'))
    summary = json.load(open(tmp_path / 'search.json'))
    assert summary['illegal_draws'] > 0 and summary['constraints']['reference'] == ref
    assert summary['rule'].startswith('combined <= 1, F/F_ref <= 1.2 against %s' % ref)
    for cand in history:
        flops, params = cand['costs']['flops'], cand['costs']['params']
        combined = 0.5 * flops / ref_flops + 0.5 * params / ref_params
        assert cand['costs']['combined'] == pytest.approx(combined, rel=1e-12)
        assert combined <= 1 and flops / ref_flops <= 1.2


def test_balanced_fitness_trades_accuracy_for_cost(tmp_path):
    """acc - r * combined: the same draws ranked two ways; the balanced winner is cheaper."""
    runs = {}
    for fitness in ('acc', 'balanced_flop_acc'):
        config = SearchConfig(strategy='random', random_iters=40, seed=3, fitness=fitness)
        top = run_search(SPACE, config, Constraints(), _real_cost, accuracy,
                         str(tmp_path / fitness))
        runs[fitness] = top[0], json.load(open(tmp_path / fitness / 'candidates.json'))
    (acc_best, acc_hist), (bal_best, bal_hist) = runs['acc'], runs['balanced_flop_acc']
    assert [c['top1'] for c in acc_hist] == [c['top1'] for c in bal_hist]
    for cand in bal_hist:
        assert cand['fitness'] == pytest.approx(cand['top1'] - cand['costs']['combined'])
    assert bal_best.fitness == max(c['fitness'] for c in bal_hist)
    assert bal_best.top1 < acc_best.top1 and bal_best.costs['combined'] < \
        acc_best.costs['combined']


def test_pareto_plot_marks_the_constraint_boundaries(tmp_path, monkeypatch):
    from matplotlib.axes import Axes
    from nas.plots import plot_pareto
    from nas.search import Candidate
    rule = Constraints(max_flops=400e6, reference='SinglePathOneShot', max_flop_ratio=1.1)
    config = SearchConfig(strategy='random', random_iters=30, seed=5)
    run_search(SPACE, config, rule, _real_cost, accuracy, str(tmp_path))
    history = [Candidate(**c) for c in json.load(open(tmp_path / 'candidates.json'))]
    lines = []
    monkeypatch.setattr(Axes, 'axvline', lambda ax, x, **kw: lines.append((x, kw['label'])))
    plot_pareto(history, str(tmp_path / 'pareto.png'), cost_keys=('flops', 'combined'),
                boundaries=rule.checks())
    # the FLOPs panel (in M) holds both FLOPs limits, the combined panel its own
    assert lines == [
        (400.0, 'limit: flops'), (pytest.approx(1.1 * 328), 'limit: flop_ratio'),
        (1.0, 'limit: combined')]
    assert (tmp_path / 'pareto.png').stat().st_size > 1000
