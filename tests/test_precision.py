"""Mixed-precision training (SPEC §3.1): bfloat16 on this CPU through MXNet AMP, float16 on GPUs.

MXNet's AMP rewrites the operators of a whole process, so every low-precision run here is a
``nas-train`` subprocess, and the float32 runs it is compared with are too.
"""
import os
import pickle
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from cli.train import main as cli
from conftest import kill_when
from nas.errors import TrainingError
from nas.space import Arch, SearchSpace
from nas.train import TrainConfig, latest_checkpoint, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = Arch((0,) * 20, (0,) * 20, SearchSpace(input_size=32, classes=10))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)


@pytest.fixture
def arch_json(tmp_path):
    path = str(tmp_path / 'tiny.json')
    TINY.save(path)
    return path


def start_train(arch_json, out, dtype, *extra, resume=False, quiet=False):
    """A ``nas-train subnet`` process on one thread: two of them run side by side on 2 cores."""
    args = [sys.executable, '-c', 'from cli.train import main; main()', 'subnet', '--arch',
            arch_json, '--input-size', '32', '--batch-size', '32', '--lr', '0.02',
            '--warmup-epochs', '1', '--dtype', dtype, '--no-progress', '-o', str(out)]
    args += list(extra) + (['--resume'] if resume else [])
    return subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else subprocess.PIPE, text=True)


def finish(*runs):
    for run in runs:
        _, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-2000:]


def params_of(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def epochs_of(run_dir):
    return [r for r in read_metrics(os.path.join(run_dir, 'metrics.jsonl'))
            if r['kind'] == 'epoch']


@pytest.mark.slow
def test_bfloat16_reaches_float32_top1_and_keeps_float32_master_weights(tmp_path, arch_json):
    """Digits at 32 px, the same 6 epochs and seed: top-1 within 1 point; the weights, their
    momenta and the exported model stay float32; the losses show bfloat16 really computed
    (here: float32 97.5 %, bfloat16 98.3 %)."""
    finish(*[start_train(arch_json, tmp_path / dtype, dtype, '--epochs', '6')
             for dtype in ('float32', 'bfloat16')])
    fp32, bf16 = (epochs_of(tmp_path / d) for d in ('float32', 'bfloat16'))
    assert fp32[-1]['val_top1'] >= 0.9, fp32
    assert abs(bf16[-1]['val_top1'] - fp32[-1]['val_top1']) <= 0.01, (bf16, fp32)
    assert [r['loss'] for r in bf16] != [r['loss'] for r in fp32]  # bfloat16 rounding
    weights = params_of(tmp_path / 'bfloat16' / 'model.params')
    assert weights and {v.dtype for v in weights.values()} == {np.dtype('float32')}
    with open(os.path.join(latest_checkpoint(tmp_path / 'bfloat16'), 'optimizer.states'),
              'rb') as handle:
        momenta = pickle.load(handle)[0]  # Trainer.save_states: (states by index, optimizer)
    assert momenta and {np.dtype(v.dtype) for v in momenta.values()} == {np.dtype('float32')}


@pytest.mark.slow
def test_bfloat16_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, arch_json):
    extra = ('--data', 'digits', '--epochs', '2', '--checkpoint-every', '10')
    uninterrupted = start_train(arch_json, tmp_path / 'a', 'bfloat16', *extra)
    try:
        victim = start_train(arch_json, tmp_path / 'b', 'bfloat16', *extra, quiet=True)
        kill_when(victim, lambda: str(latest_checkpoint(tmp_path / 'b')).endswith(
            ('ckpt-000000030', 'ckpt-000000040')), 600)
        killed_at = int(latest_checkpoint(tmp_path / 'b').rsplit('-', 1)[1])
        assert killed_at < 2 * 44  # 1437 training digits, batch 32: 44 steps per epoch
        finish(start_train(arch_json, tmp_path / 'b', 'bfloat16', *extra, resume=True),
               uninterrupted)
    finally:
        if uninterrupted.poll() is None:  # a failed check above must not leave it running
            uninterrupted.kill()
    a, b = params_of(tmp_path / 'a' / 'model.params'), params_of(tmp_path / 'b' / 'model.params')
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


@pytest.mark.skipif(mx.context.num_gpus() == 0,
                    reason='no GPU on this machine: float16 training (AMP, dynamic loss '
                           'scaling) runs only on GPUs, MXNet 1.9.1 has no float16 GEMM on CPU')
def test_float16_on_a_gpu_learns_with_float32_master_weights(tmp_path, arch_json):
    finish(start_train(arch_json, tmp_path / 'run', 'float16', '--epochs', '3', '--gpus', '0'))
    epochs = epochs_of(tmp_path / 'run')
    assert epochs[-1]['loss'] < epochs[0]['loss'] and epochs[-1]['val_top1'] >= 0.6
    weights = params_of(tmp_path / 'run' / 'model.params')
    assert {v.dtype for v in weights.values()} == {np.dtype('float32')}


def test_a_dtype_this_runtime_cannot_run_is_one_line_exit_2(tmp_path, arch_json):
    result = CliRunner().invoke(cli, ['subnet', '--arch', arch_json, '--epochs', '1',
                                      '--dtype', 'float16', '-o', str(tmp_path / 'run')])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: float16 needs GPUs'), lines
    assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
    with pytest.raises(TrainingError, match='unknown dtype'):
        TrainConfig(dtype='float8')
