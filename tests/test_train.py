import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mxnet import autograd, gluon

from conftest import kill_when
from fixtures import write_image_folder, write_recordio
from nas.data import load_digits, open_dataset
from nas.errors import TrainingError
from nas.network import OneShotNet, channel_mask
from nas.sampler import CostBox, StrollingSampler, UniformSampler
from nas.schedule import ChannelSchedule, learning_rate
from nas.space import Arch, SearchSpace
from nas.train import (TrainConfig, latest_checkpoint, read_metrics, subnet_recipe,
                       supernet_recipe, train, train_subnet, train_supernet)
from nas.train_loop import Run, smooth_labels
from cli.train import main as cli

PLAIN32 = SearchSpace(input_size=32, classes=10)
TINY = Arch((0,) * 20, (0,) * 20, PLAIN32)  # the smallest subnet: all SNB-3x3 at scale 0.2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = 1e6
BUDGET = TrainConfig(epochs=6, batch_size=32, lr=0.02, warmup_epochs=1, seed=0)  # learning tests


@pytest.fixture(scope='module')
def digits():
    return open_dataset('digits', 'train', 32, 0), open_dataset('digits', 'val', 32, 0)


def head(dataset, n):
    return dataset.subset(np.arange(n))


def params_of(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def step_losses(run_dir):
    return [r['loss'] for r in read_metrics(os.path.join(run_dir, 'metrics.jsonl'))
            if r['kind'] == 'step']


# --- recipe --------------------------------------------------------------------------------------

def test_label_smoothing_targets():
    target = smooth_labels(mx.nd.array([2, 0]), 10, 0.1).asnumpy()
    assert target[0, 2] == pytest.approx(1 - 0.1 + 0.01) and target[0, 0] == pytest.approx(0.01)
    np.testing.assert_allclose(target.sum(axis=1), 1.0, rtol=1e-6)


def test_update_is_nag_without_decay_on_bn_and_bias_skipping_unused_paths(digits, tmp_path):
    """The loop's per-path update (no-wd on BN and biases, only the path's gradients) equals a
    plain gluon NAG Trainer with ignore_stale_grad on the same paths."""
    cfg = TrainConfig(lr=0.1, wd=1e-2, epochs=1, batch_size=8)
    ours = OneShotNet(space=PLAIN32)
    run = Run(ours, head(digits[0], 16), None, tmp_path, cfg, UniformSampler(PLAIN32), None,
              'local', False)
    mx.random.seed(0)
    reference = OneShotNet(space=PLAIN32)
    reference.initialize()
    for name, param in reference._collect_params_with_prefix().items():
        param.set_data(ours._collect_params_with_prefix()[name].data())
        if name.endswith(('gamma', 'beta', 'bias')):
            param.wd_mult = 0.0
    trainer = gluon.Trainer(reference.collect_params(), 'nag',
                            {'learning_rate': 0.1, 'momentum': 0.9, 'wd': 1e-2})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    x, y = mx.nd.random.normal(shape=(4, 3, 32, 32)), mx.nd.array(np.arange(4))
    initial = {n: p.data().asnumpy() for n, p in ours._collect_params_with_prefix().items()}
    for step in range(3):
        arch = UniformSampler(PLAIN32, seed=0).sample(step, 0)
        mask = channel_mask(PLAIN32, arch.channels)
        for net in (ours, reference):
            mx.random.seed(step)  # the same dropout masks
            with autograd.record():
                loss = loss_fn(net(x, arch.blocks, mask), y)
            loss.backward()
        run._update(4)
        trainer.step(4, ignore_stale_grad=True)
    got, want = ours._collect_params_with_prefix(), reference._collect_params_with_prefix()
    for name in want:
        np.testing.assert_allclose(got[name].data().asnumpy(), want[name].data().asnumpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=name)
    unused = 'units.0.choices.%d.main.0.conv.weight' % ({0, 1, 2, 3} - {
        UniformSampler(PLAIN32, seed=0).sample(s, 0).blocks[0] for s in range(3)}).pop()
    assert np.all(got[unused].data().asnumpy() == initial[unused])
    assert got['units.0.choices.0.main.0.bn.gamma'].wd_mult == 0.0
    assert got['output.bias'].wd_mult == 0.0 and got['output.weight'].wd_mult == 1.0
    assert run.trainer.optimizer.momentum == 0.9
    assert isinstance(run.trainer.optimizer, mx.optimizer.NAG)


@pytest.mark.parametrize('entry', ['subnet', 'supernet', 'train'])
def test_entry_points_called_with_defaults_train_with_the_spec_recipe(entry, digits, tmp_path,
                                                                      monkeypatch):
    """SPEC §3.2 for train_subnet, §3.3 for train_supernet and train, whoever calls them."""
    import nas.train
    seen = []

    class Stop(Exception):
        pass

    def capture(net, train_set, val_set, run_dir, config, *args):
        seen.append(config)
        raise Stop()
    monkeypatch.setattr(nas.train, 'Run', capture)
    with pytest.raises(Stop):
        if entry == 'subnet':
            train_subnet(TINY, digits[0], None, tmp_path)
        elif entry == 'supernet':
            train_supernet(PLAIN32, digits[0], None, tmp_path)
        else:
            train(OneShotNet(space=PLAIN32), digits[0], None, tmp_path, sampler=UniformSampler(
                PLAIN32))
    got = seen[0]
    want = ((360, 1024, 1.3, 3e-5) if entry == 'subnet' else (120, 64, 0.65, 4e-5))
    assert (got.epochs, got.batch_size, got.lr, got.wd) == want
    assert (got.momentum, got.warmup_epochs, got.label_smoothing, got.dtype) == (
        0.9, 5.0, 0.1, 'float32')
    assert got == (subnet_recipe() if entry == 'subnet' else supernet_recipe())
    assert subnet_recipe(256).lr == pytest.approx(1.3 / 4)  # linear scaling, SPEC §3.2


def test_bn_momentum_is_gluon_default():
    blocks = []
    OneShotNet(TINY).apply(lambda b: blocks.append(b) if isinstance(b, gluon.nn.BatchNorm)
                           else None)
    assert blocks and {b._kwargs['momentum'] for b in blocks} == {0.9}


# --- learning, outputs, checkpoints ---------------------------------------------------------

def test_subnet_learns_and_writes_a_complete_run_dir(digits, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.02, warmup_epochs=1, seed=0)
    result = train_subnet(TINY, digits[0], digits[1], tmp_path, cfg)
    first, last = result.epochs
    assert last['loss'] < first['loss'] and result.val_top1 >= 0.6
    assert sorted(os.listdir(tmp_path)) == ['arch.json', 'checkpoints', 'curve.png',
                                            'metrics.jsonl', 'model.params']
    with open(tmp_path / 'curve.png', 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
    records = read_metrics(tmp_path / 'metrics.jsonl')
    steps = [r for r in records if r['kind'] == 'step']
    assert len(steps) == result.steps == 2 * (len(digits[0]) // 64)
    assert {'epoch', 'step', 'loss', 'top1', 'lr', 'img_per_s'} <= set(steps[0])
    batches = len(digits[0]) // 64
    for record in steps:  # per-iteration linear warm-up over 1 epoch, then cosine to 0
        assert record['lr'] == pytest.approx(learning_rate(record['step'] - 1, 0.02, batches,
                                                           2 * batches))
    assert [r['epoch'] for r in records if r['kind'] == 'epoch'] == [0, 1]
    assert Arch.load(tmp_path / 'arch.json') == TINY


@pytest.mark.slow
def test_subnet_from_scratch_reaches_95_percent(digits, tmp_path):
    result = train_subnet(TINY, digits[0], digits[1], tmp_path, BUDGET)
    assert result.val_top1 >= 0.95


def test_subnet_weights_are_accepted_by_the_zoo(digits, tmp_path):
    from zoo import import_weights, register_model
    from nas.params_io import load_params_checked
    run_dir = tmp_path / 'run'
    train_subnet(TINY, head(digits[0], 32), None, run_dir,
                 TrainConfig(epochs=1, batch_size=16, lr=0.01))
    arch = Arch.load(run_dir / 'arch.json')
    load_params_checked(OneShotNet(arch), str(run_dir / 'model.params'))
    root = str(tmp_path / 'store')
    register_model('digits_tiny', arch, root=root)
    stored = import_weights('digits_tiny', str(run_dir / 'model.params'), root=root)
    assert os.path.isfile(stored)


def test_checkpoints_keep_the_last_k(digits, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.01, checkpoint_every=2, keep_checkpoints=2)
    train_subnet(TINY, head(digits[0], 40), None, tmp_path, cfg)  # 5 steps per epoch
    names = sorted(os.listdir(tmp_path / 'checkpoints'))
    assert names == ['ckpt-000000008', 'ckpt-000000010']
    assert sorted(os.listdir(tmp_path / 'checkpoints' / names[-1])) == [
        'net.params', 'optimizer.states', 'state.json']
    with open(tmp_path / 'checkpoints' / names[-1] / 'state.json') as handle:
        state = json.load(handle)
    assert (state['epoch'], state['batch'], state['step']) == (2, 0, 10)
    assert {'python_random', 'numpy_random', 'sampler', 'config'} <= set(state)
    np.testing.assert_array_equal(params_of(tmp_path / 'model.params')['output.weight'],
                                  params_of(latest_checkpoint(tmp_path) + '/net.params')[
                                      'output.weight'])


class _Interrupted(Exception):
    pass


class _Killer(StrollingSampler):
    """A strolling sampler that 'crashes' the run when it reaches a step."""

    def __init__(self, at_step, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.at_step = at_step

    def sample(self, step, *args):
        if step == self.at_step:
            raise _Interrupted()
        return super().sample(step, *args)


def additive_cost(arch):
    flops = sum((b + 1) * (c + 1) for b, c in zip(arch.blocks, arch.channels)) * M
    return flops, 2 * M + 0.1 * M * sum(arch.channels)


@pytest.mark.slow
def test_supernet_resume_mid_epoch_repeats_the_uninterrupted_run(digits, tmp_path):
    """Strolling evolution (stateful sampler), checkpoint every 2 steps, crash at step 5."""
    train_set, val_set = head(digits[0], 24), head(digits[1], 8)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, warmup_epochs=1, checkpoint_every=2,
                      recal_images=16)
    kwargs = dict(box=CostBox(200 * M, 340 * M, 9 * M, 13 * M), schedule=ChannelSchedule(
        warmup=False), seed=0)
    train_supernet(PLAIN32, train_set, val_set, tmp_path / 'a', cfg,
                   sampler=StrollingSampler(PLAIN32, additive_cost, **kwargs))
    with pytest.raises(_Interrupted):
        train_supernet(PLAIN32, train_set, val_set, tmp_path / 'b', cfg,
                       sampler=_Killer(5, PLAIN32, additive_cost, **kwargs))
    assert latest_checkpoint(tmp_path / 'b').endswith('ckpt-000000004')  # epoch 1, batch 1
    with pytest.raises(TrainingError, match='pass --resume'):
        train_supernet(PLAIN32, train_set, val_set, tmp_path / 'b', cfg,
                       sampler=StrollingSampler(PLAIN32, additive_cost, **kwargs))
    train_supernet(PLAIN32, train_set, val_set, tmp_path / 'b', cfg, resume=True,
                   sampler=StrollingSampler(PLAIN32, additive_cost, **kwargs))
    np.testing.assert_allclose(step_losses(tmp_path / 'b'), step_losses(tmp_path / 'a'),
                               rtol=0, atol=1e-6)
    archs = [[r.get('arch') for r in read_metrics(tmp_path / run / 'metrics.jsonl')]
             for run in ('a', 'b')]
    assert archs[0] == archs[1]
    a, b = params_of(tmp_path / 'a' / 'supernet.params'), params_of(tmp_path / 'b' /
                                                                      'supernet.params')
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
    assert json.load(open(tmp_path / 'b' / 'space.json')) == json.load(
        open(tmp_path / 'a' / 'space.json'))


def test_subnet_resume_mid_epoch_is_exact(digits, tmp_path, monkeypatch):
    import nas.train_loop
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.02, warmup_epochs=1, checkpoint_every=3)
    train_set = head(digits[0], 40)  # 5 steps per epoch
    train_subnet(TINY, train_set, None, tmp_path / 'a', cfg)
    calls = []

    def crash_at_step_7(label, classes, eps):
        calls.append(1)
        if len(calls) == 8:
            raise _Interrupted()
        return smooth_labels(label, classes, eps)
    monkeypatch.setattr(nas.train_loop, 'smooth_labels', crash_at_step_7)
    with pytest.raises(_Interrupted):
        train_subnet(TINY, train_set, None, tmp_path / 'b', cfg)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / 'b').endswith('ckpt-000000006')  # epoch 1, batch 1
    train_subnet(TINY, train_set, None, tmp_path / 'b', cfg, resume=True)
    np.testing.assert_allclose(step_losses(tmp_path / 'b'), step_losses(tmp_path / 'a'),
                               rtol=0, atol=1e-6)
    a, b = params_of(tmp_path / 'a' / 'model.params'), params_of(tmp_path / 'b' / 'model.params')
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)


def test_resume_refuses_other_options(digits, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01)
    train_subnet(TINY, head(digits[0], 16), None, tmp_path, cfg)
    with pytest.raises(TrainingError, match='seed 0 .checkpoint. vs 1'):
        train_subnet(TINY, head(digits[0], 16), None, tmp_path,
                     TrainConfig(epochs=1, batch_size=8, lr=0.01, seed=1), resume=True)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e8, warmup_epochs=0, checkpoint_every=1)
    with pytest.raises(TrainingError, match='non-finite|loss became nan|loss became inf'):
        train_subnet(TINY, head(digits[0], 40), None, tmp_path, cfg)
    good = latest_checkpoint(tmp_path)
    assert good is not None
    assert all(np.isfinite(v).all() for v in params_of(os.path.join(good, 'net.params')).values())
    assert not os.path.exists(tmp_path / 'model.params')


def test_nan_loss_stops_before_the_update(digits, tmp_path, monkeypatch):
    import nas.train_loop
    calls = []

    def poisoned(label, classes, eps):  # the 4th step sees a NaN target
        calls.append(1)
        return smooth_labels(label, classes, eps) * (float('nan') if len(calls) == 4 else 1.0)
    monkeypatch.setattr(nas.train_loop, 'smooth_labels', poisoned)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.01, checkpoint_every=1)
    with pytest.raises(TrainingError, match='loss became nan at epoch 0, step 3'):
        train_subnet(TINY, head(digits[0], 48), None, tmp_path, cfg)
    good = latest_checkpoint(tmp_path)
    assert good.endswith('ckpt-000000003')
    assert all(np.isfinite(v).all() for v in params_of(os.path.join(good, 'net.params')).values())


def test_several_devices_split_the_batch_and_stay_identical(digits, tmp_path):
    net = OneShotNet(TINY)
    result = train(net, head(digits[0], 192), None, tmp_path,
                   TrainConfig(epochs=3, batch_size=32, lr=0.01, warmup_epochs=1),
                   ctx=[mx.cpu(0), mx.cpu(1)])
    assert result.epochs[2]['loss'] < result.epochs[0]['loss']
    for name, param in net._collect_params_with_prefix().items():
        first, second = (a.asnumpy() for a in param.list_data())
        np.testing.assert_array_equal(first, second, err_msg=name)


@pytest.mark.slow
def test_supernet_paths_reach_85_percent_after_bn_recalibration(digits, tmp_path):
    """Same budget as the 95 % subnet test; channel mode over the SNB-3x3 supernet."""
    from nas.bn_recal import recalibrate_bn
    from nas.data import make_loader
    from nas.evaluate import topk_accuracy
    cfg = BUDGET
    sampler = UniformSampler(PLAIN32, mode='channel', fixed_blocks=(0,) * 20,
                             schedule=ChannelSchedule(warmup=False), seed=0)
    train_supernet(PLAIN32, digits[0], None, tmp_path, cfg, sampler=sampler)
    supernet = OneShotNet(space=PLAIN32)
    supernet.load_parameters(str(tmp_path / 'supernet.params'))
    recal = [x for x, _ in make_loader(digits[0], 128, train=False)][:4]
    scores = []
    for index in range(5):
        arch = sampler.validation_arch(99, index)
        mask = channel_mask(PLAIN32, arch.channels)

        def forward(x, arch=arch, mask=mask):
            return supernet(x, arch.blocks, mask)
        recalibrate_bn(supernet, recal, forward)
        scores.append(topk_accuracy(forward, make_loader(digits[1], 128, train=False),
                                    ks=(1,))[0])
    assert np.mean(scores) >= 0.85, scores


# --- the CLI: data kinds and bad input ------------------------------------------------------------

def tiny_images(n=60):
    return load_digits(32, 'all', 0)[0][:n], load_digits(32, 'all', 0)[1][:n]


def run_cli(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


@pytest.fixture
def arch_json(tmp_path):
    path = str(tmp_path / 'tiny.json')
    TINY.save(path)
    return path


def test_cli_trains_on_an_image_folder_and_counts_unreadable_images(tmp_path, arch_json, caplog):
    images, labels = tiny_images()
    root = write_image_folder(str(tmp_path / 'folder'), images, labels)
    with open(os.path.join(root, '3', 'not_an_image.png'), 'wb') as handle:
        handle.write(b'hello, not a picture')
    result = run_cli('subnet', '--arch', arch_json, '--data', root, '--input-size', '32',
                     '--epochs', '1', '--batch-size', '16', '--lr', '0.01', '--no-progress',
                     '-o', str(tmp_path / 'run'))
    assert result.exit_code == 0, result.output
    assert 'skipped 1 unreadable image(s)' in result.output
    assert os.path.isfile(tmp_path / 'run' / 'model.params')


def test_cli_trains_on_a_recordio_file(tmp_path, arch_json):
    images, labels = tiny_images()
    rec = write_recordio(str(tmp_path / 'digits'), images, labels)
    result = run_cli('subnet', '--arch', arch_json, '--data', rec, '--input-size', '32',
                     '--epochs', '1', '--batch-size', '16', '--lr', '0.01', '--no-progress',
                     '-o', str(tmp_path / 'run'))
    assert result.exit_code == 0, result.output
    assert 'trained 3 steps (1 epochs)' in result.output


def test_cli_supernet_writes_supernet_params_and_space(tmp_path):
    images, labels = tiny_images(40)
    root = write_image_folder(str(tmp_path / 'folder'), images, labels)
    result = run_cli('supernet', '--data', root, '--input-size', '32', '--no-se',
                     '--no-last-conv-after-pooling', '--epochs', '1', '--batch-size', '16',
                     '--lr', '0.01', '--recal-images', '16', '--no-progress',
                     '-o', str(tmp_path / 'run'))
    assert result.exit_code == 0, result.output
    space = SearchSpace(**json.load(open(tmp_path / 'run' / 'space.json')))
    assert space == PLAIN32
    from nas.params_io import load_params_checked
    load_params_checked(OneShotNet(space=space), str(tmp_path / 'run' / 'supernet.params'))


def test_cli_constrained_supernet_trains_only_paths_under_the_limit(tmp_path, monkeypatch):
    from nas.lookup_table import LookupTable
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mxnet_home'))  # the table cache
    table = LookupTable.load_or_build(PLAIN32)
    limit = table.cost(Arch((1,) * 20, (5,) * 20, PLAIN32))[0]
    images, labels = tiny_images(40)
    root = write_image_folder(str(tmp_path / 'folder'), images, labels)
    result = run_cli('supernet', '--data', root, '--input-size', '32', '--no-se',
                     '--no-last-conv-after-pooling', '--sampler', 'constrained',
                     '--max-flops', '%.6fM' % (limit / 1e6), '--epochs', '1',
                     '--batch-size', '8', '--lr', '0.01', '--recal-images', '8',
                     '--no-progress', '-o', str(tmp_path / 'run'))
    assert result.exit_code == 0, result.output
    archs = [Arch.parse(r['arch'], PLAIN32)
             for r in read_metrics(tmp_path / 'run' / 'metrics.jsonl') if r['kind'] == 'step']
    assert len(archs) == 3 and all(table.cost(a)[0] <= limit for a in archs)  # 30 images


def test_training_sampler_refuses_a_box_below_the_cheapest_path(tmp_path, monkeypatch):
    from nas.lookup_table import LookupTable
    from nas.train import training_sampler
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mxnet_home'))  # the table cache
    cheapest = LookupTable.load_or_build(PLAIN32).min_cost()
    for box, what in ((CostBox(max_flops=cheapest[0] - 1), 'FLOPs'),
                      (CostBox(max_params=cheapest[1] - 1), 'params')):
        with pytest.raises(TrainingError, match='infeasible limits: .* %s' % what):
            training_sampler('constrained', PLAIN32, box)
    assert training_sampler('constrained', PLAIN32, CostBox(max_flops=cheapest[0])).kind == (
        'constrained')  # the cheapest path itself fits


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    return lines[0]


@pytest.mark.parametrize('case', ['missing', 'empty', 'empty_class', 'not_data'])
def test_cli_bad_data_is_one_line_exit_2(tmp_path, arch_json, case):
    data = tmp_path / 'data'
    if case == 'empty':
        data.mkdir()
    elif case == 'empty_class':
        images, labels = tiny_images(20)
        write_image_folder(str(data), images, labels)
        (data / 'zz_empty').mkdir()
    elif case == 'not_data':
        data.write_text('hello')
    line = _one_line_error(run_cli('subnet', '--arch', arch_json, '--data', str(data),
                                   '--input-size', '32', '-o', str(tmp_path / 'run')))
    assert {'missing': 'does not exist', 'empty': 'no class sub-folders',
            'empty_class': 'has no images', 'not_data': 'neither a directory'}[case] in line


def test_cli_unwritable_output_is_one_line_exit_2(tmp_path, arch_json):
    blocker = tmp_path / 'file'
    blocker.write_text('precious')
    line = _one_line_error(run_cli('subnet', '--arch', arch_json, '--epochs', '1',
                                   '-o', str(blocker / 'run')))
    assert 'cannot write to output directory' in line
    assert blocker.read_text() == 'precious'


def test_cli_refuses_to_overwrite_a_run_and_bad_limits(tmp_path, arch_json, digits):
    train_subnet(TINY, head(digits[0], 16), None, tmp_path / 'run',
                 TrainConfig(epochs=1, batch_size=8, lr=0.01))
    before = sorted(os.listdir(tmp_path / 'run' / 'checkpoints'))
    line = _one_line_error(run_cli('subnet', '--arch', arch_json, '--epochs', '1',
                                   '-o', str(tmp_path / 'run')))
    assert '--resume' in line
    assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == before
    line = _one_line_error(run_cli('supernet', '--sampler', 'constrained', '--max-flops', 'lots',
                                   '-o', str(tmp_path / 'other')))
    assert '--max-flops' in line and '300M' in line


@pytest.mark.slow
def test_cli_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, arch_json):
    images, labels = tiny_images(200)
    root = write_image_folder(str(tmp_path / 'folder'), images, labels)  # 160 train images

    def command(out, resume=False):
        args = ['subnet', '--arch', arch_json, '--data', root, '--input-size', '32',
                '--epochs', '3', '--batch-size', '32', '--lr', '0.02', '--warmup-epochs', '1',
                '--checkpoint-every', '2', '--no-progress', '-o', str(out)]
        return [sys.executable, '-c', 'from cli.train import main; main()'] + args + (
            ['--resume'] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    subprocess.run(command(tmp_path / 'a'), env=env, check=True, capture_output=True,
                   timeout=300)
    victim = subprocess.Popen(command(tmp_path / 'b'), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    kill_when(victim, lambda: str(latest_checkpoint(tmp_path / 'b')).endswith(
        ('ckpt-000000006', 'ckpt-000000008')), 240)
    killed_at = int(latest_checkpoint(tmp_path / 'b').rsplit('-', 1)[1])
    assert killed_at < 15  # it really was interrupted before the end (3 x 5 steps)
    subprocess.run(command(tmp_path / 'b', resume=True), env=env, check=True,
                   capture_output=True, timeout=300)
    np.testing.assert_allclose(step_losses(tmp_path / 'b'), step_losses(tmp_path / 'a'),
                               rtol=0, atol=1e-6)
    a, b = params_of(tmp_path / 'a' / 'model.params'), params_of(tmp_path / 'b' / 'model.params')
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)


def test_cli_context_lists():
    from cli.train import _parse_contexts
    assert _parse_contexts('cpu(0),cpu(1)', None) == [mx.cpu(0), mx.cpu(1)]
    assert _parse_contexts(None, '0,1') == [mx.gpu(0), mx.gpu(1)]
    assert _parse_contexts(None, None) == [mx.cpu()]
    with pytest.raises(TrainingError, match='either --ctx or --gpus'):
        _parse_contexts('cpu(0)', '0')
    with pytest.raises(TrainingError, match='cannot read context'):
        _parse_contexts('tpu(0)', None)
