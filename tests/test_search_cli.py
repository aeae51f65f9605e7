"""nas-search on a supernet really trained on the embedded digits, and the winner's way into the
zoo: register -> train -> pretrained=True -> nas-export -> nas-score."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import kill_when
from nas.data import open_dataset
from nas.sampler import UniformSampler
from cli.search import main as search_cli
from nas.space import SearchSpace
from nas.train import TrainConfig, train_supernet

pytestmark = pytest.mark.slow
SPACE = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=32, classes=10)
# the OneShot-S+ blocks; channels sampled (the joint space needs far more steps than a test has)
BLOCKS = (0, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0, 1, 2, 2, 1, 2, 0, 0, 2, 0)


@pytest.fixture(scope='module')
def supernet_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp('supernet'))
    train_set = open_dataset('digits', 'train', 32)
    train_set = train_set.subset(np.arange(0, len(train_set), 2))
    sampler = UniformSampler(SPACE, mode='channel', fixed_blocks=BLOCKS, seed=0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.2, val_paths=1,
                         recal_images=64)
    train_supernet(SPACE, train_set, None, run_dir, config, sampler=sampler)
    return run_dir


def _search(runner, supernet_dir, out, *extra):
    args = [supernet_dir, '-o', out, '--recalib-batches', '1', '--val-batches', '2',
            '--batch-size', '64', '--space', 'channel', '--fixed-arch',
            ''.join(map(str, BLOCKS)) + ':' + '9' * 20] + list(extra)
    return runner.invoke(search_cli, args)


def test_search_respects_constraints_and_is_reproducible(supernet_dir, tmp_path):
    runner = CliRunner()
    limit = 6.0e6
    first = _search(runner, supernet_dir, str(tmp_path / 'a'), '--strategy', 'genetic',
                    '--population', '4', '--generations', '2', '--elite', '2',
                    '--max-flops', '6M', '--seed', '5')
    assert first.exit_code == 0, first.output + first.stderr
    history = json.load(open(tmp_path / 'a' / 'candidates.json'))
    assert len(history) >= 4
    assert all(c['costs']['flops'] <= limit for c in history)
    assert all(c['arch'].startswith(''.join(map(str, BLOCKS))) for c in history)
    assert os.path.getsize(tmp_path / 'a' / 'pareto.png') > 1000
    _search(runner, supernet_dir, str(tmp_path / 'b'), '--strategy', 'genetic',
                     '--population', '4', '--generations', '2', '--elite', '2',
                     '--max-flops', '6M', '--seed', '5')
    assert json.load(open(tmp_path / 'b' / 'topk.json')) == \
        json.load(open(tmp_path / 'a' / 'topk.json'))


def test_winner_round_trip_through_the_zoo(supernet_dir, tmp_path):
    from cli.export import main as export_cli
    from cli.train import main as train_cli
    from cli.score import main as score_cli
    from zoo import get_model
    from cli.zoo import main as zoo_cli
    runner = CliRunner()
    root = str(tmp_path / 'store')
    out = _search(runner, supernet_dir, str(tmp_path / 's'), '--strategy', 'random',
                  '--iterations', '3', '--register', 'digits_winner', '--root', root)
    assert out.exit_code == 0, out.output + out.stderr
    info = json.loads(runner.invoke(zoo_cli, ['info', 'digits_winner', '--json',
                                              '--root', root]).stdout)
    winner = json.load(open(tmp_path / 's' / 'topk.json'))[0]
    assert info['flops'] == winner['costs']['flops'] and info['params'] == \
        winner['costs']['params']
    assert len(info['blocks']) == 20 and len(info['channels']) == 20
    trained = runner.invoke(train_cli, ['subnet', '--arch', 'digits_winner', '--root', root,
                                        '--epochs', '1', '--batch-size', '64',
                                        '--no-progress', '-o', str(tmp_path / 'w')])
    assert trained.exit_code == 0, trained.output + trained.stderr
    imported = runner.invoke(zoo_cli, ['import', 'digits_winner',
                                       str(tmp_path / 'w' / 'model.params'), '--root', root])
    assert imported.exit_code == 0, imported.stderr
    net = get_model('digits_winner', pretrained=True, root=root)
    assert net(mx.nd.zeros((1, 3, 32, 32))).shape == (1, 10)
    onnx_path = str(tmp_path / 'w.onnx')
    exported = runner.invoke(export_cli, ['--onnx', 'digits_winner', '--pretrained', '--root',
                                          root, '-o', onnx_path, '--input-size', '32'])
    assert exported.exit_code == 0, exported.stderr
    assert os.path.getsize(onnx_path) > 10000
    scored = runner.invoke(score_cli, ['micronet', 'digits_winner', '--json', '--root', root])
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)['score'] > 0


def test_search_bad_input(supernet_dir, tmp_path):
    runner = CliRunner()
    infeasible = _search(runner, supernet_dir, str(tmp_path / 'x'), '--max-flops', '1M')
    assert infeasible.exit_code == 2
    assert infeasible.stderr.startswith('error: infeasible constraints') and \
        infeasible.stderr.count('\n') == 1
    table = tmp_path / 'lat.json'
    table.write_text('{}')
    runtime = _search(runner, supernet_dir, str(tmp_path / 'y'), '--max-latency-ms', '5',
                      '--latency-table', str(table), '--runtime', 'tensorrt')
    assert runtime.exit_code == 2 and 'tensorrt' in runtime.stderr
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'space.json').write_text(json.dumps(dict(SPACE.__dict__, use_se=False)))
    os.link(os.path.join(supernet_dir, 'supernet.params'), str(other / 'supernet.params'))
    mismatch = runner.invoke(search_cli, [str(other), '-o', str(tmp_path / 'z')])
    assert mismatch.exit_code == 2 and 'does not match its search space' in mismatch.stderr
    not_a_run = runner.invoke(search_cli, [str(tmp_path), '-o', str(tmp_path / 'q')])
    assert not_a_run.exit_code == 2 and 'not a supernet run directory' in not_a_run.stderr


def test_sigkill_then_resume_gives_the_uninterrupted_result(supernet_dir, tmp_path):
    import subprocess
    import sys
    runner = CliRunner()
    options = ['--strategy', 'genetic', '--population', '4', '--generations', '3', '--elite',
               '2', '--seed', '3']
    full = _search(runner, supernet_dir, str(tmp_path / 'full'), *options)
    assert full.exit_code == 0, full.stderr
    killed_dir = tmp_path / 'killed'
    args = [supernet_dir, '-o', str(killed_dir), '--recalib-batches', '1', '--val-batches', '2',
            '--batch-size', '64', '--space', 'channel', '--fixed-arch',
            ''.join(map(str, BLOCKS)) + ':' + '9' * 20] + options
    proc = subprocess.Popen([sys.executable, '-c', 'from cli.search import main; main()']
                            + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed_dir / 'search_state.json'
    kill_when(proc, lambda: state.exists()
              and json.loads(state.read_text() or '{}').get('generation', 0) >= 1, 300)
    assert not (killed_dir / 'topk.json').exists()
    resumed = runner.invoke(search_cli, args + ['--resume'])
    assert resumed.exit_code == 0, resumed.stderr
    assert json.load(open(killed_dir / 'candidates.json')) == \
        json.load(open(tmp_path / 'full' / 'candidates.json'))


@pytest.fixture(scope='module')
def random_224_supernet(tmp_path_factory):
    """An untrained 224 x 224 supernet: enough for legality, which reads costs only."""
    from dataclasses import asdict
    from nas.network import OneShotNet
    run_dir = tmp_path_factory.mktemp('supernet224')
    space = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=224, classes=10)
    supernet = OneShotNet(space=space)
    supernet.initialize()
    supernet.save_parameters(str(run_dir / 'supernet.params'))
    (run_dir / 'space.json').write_text(json.dumps(asdict(space)))
    return str(run_dir), space


def test_reference_rule_holds_on_exact_counts_at_224(random_224_supernet, tmp_path):
    """--reference SinglePathOneShot --max-combined 1: every evaluated candidate's exact SPEC
    §6.1 count (the network built and counted, not the table) has 0.5 F/328M + 0.5 P/3.4M <= 1;
    the illegal draws use up iterations and are reported."""
    from nas.counting import count_net
    from nas.network import OneShotNet
    from nas.space import Arch
    run_dir, space = random_224_supernet
    out = tmp_path / 'legal'
    result = CliRunner().invoke(search_cli, [
        run_dir, '-o', str(out), '--strategy', 'random', '--iterations', '30', '--seed', '1',
        '--reference', 'SinglePathOneShot', '--max-combined', '1', '--recalib-batches', '0',
        '--val-batches', '1', '--batch-size', '8'])
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.load(open(out / 'search.json'))
    history = json.load(open(out / 'candidates.json'))
    assert summary['rule'] == 'combined <= 1 against SinglePathOneShot (328M FLOPs, 3.4M params)'
    assert summary['illegal_draws'] > 0 and 0 < len(history) <= 30 - summary['illegal_draws']
    assert '(%d illegal draws skipped)' % summary['illegal_draws'] in result.stdout
    for cand in history:
        counted = count_net(OneShotNet(Arch.parse(cand['arch'], space)), (3, 224, 224))
        assert (counted.flops, counted.params) == (cand['costs']['flops'],
                                                   cand['costs']['params'])
        assert 0.5 * counted.flops / 328e6 + 0.5 * counted.params / 3.4e6 <= 1
        assert cand['costs']['combined'] <= 1


def test_balanced_fitness_picks_a_cheaper_winner(supernet_dir, tmp_path):
    """The same supernet, seed and draws, ranked by top-1 and by top-1 - combined. At 32 x 32
    the FLOPs are ~2 % of the comparison model's, so combined is mostly params: the balanced
    winner gives up 0.8 points for 5 % fewer params (acc: 6.25M FLOPs, 2.510M params, 56.25 %;
    balanced: 6.39M FLOPs, 2.377M params, 55.47 %, on this run)."""
    runner = CliRunner()
    winners = {}
    for fitness in ('acc', 'balanced_flop_acc'):
        out = _search(runner, supernet_dir, str(tmp_path / fitness), '--strategy', 'random',
                      '--iterations', '8', '--seed', '4', '--fitness', fitness)
        assert out.exit_code == 0, out.output + out.stderr
        assert 'fitness: %s' % fitness in out.stdout
        winners[fitness] = json.load(open(tmp_path / fitness / 'topk.json'))[0]
    acc, balanced = winners['acc'], winners['balanced_flop_acc']
    print('winners (FLOPs, params, top-1): acc %s, balanced_flop_acc %s' % tuple(
        (w['costs']['flops'], w['costs']['params'], w['top1']) for w in (acc, balanced)))
    assert balanced['costs']['combined'] < acc['costs']['combined']
    assert balanced['costs']['params'] < acc['costs']['params']
    assert balanced['top1'] < acc['top1']
    assert balanced['fitness'] == pytest.approx(balanced['top1'] - balanced['costs']['combined'])


def test_small_population_needs_no_elite(supernet_dir, tmp_path):
    """Issue 18: --population 8 alone used to fail on the default elite of 10."""
    out = _search(CliRunner(), supernet_dir, str(tmp_path / 'p8'), '--population', '8',
                  '--generations', '1')
    assert out.exit_code == 0, out.output + out.stderr
    state = json.load(open(tmp_path / 'p8' / 'search_state.json'))
    assert state['config']['elite'] == 8 and len(state['population']) == 8


@pytest.mark.parametrize('args, message', [
    (['--reference', 'MobileNetV4'], "'MobileNetV4' is not one of 'SinglePathOneShot', "
                                     "'MobileNetV3_large', 'MobileNetV2_1.4', "
                                     "'ShuffleNetV2+_medium'"),
    (['--reference', 'SinglePathOneShot', '--max-combined', '0'], '--max-combined'),
    (['--max-combined', '-1'], '--max-combined'),
    (['--max-flop-ratio', 'nan'], '--max-flop-ratio'),
    (['--fitness', 'balanced_flop_acc', '--balance-r', '0'], '--balance-r'),
])
def test_bad_rule_options_are_one_line_errors(tmp_path, args, message):
    out = CliRunner().invoke(search_cli, [str(tmp_path), '-o', str(tmp_path / 'x')] + args)
    assert out.exit_code == 2 and out.stdout == ''
    assert out.stderr.startswith('error: ') and out.stderr.count('\n') == 1
    assert message in out.stderr
    assert not (tmp_path / 'x').exists()
