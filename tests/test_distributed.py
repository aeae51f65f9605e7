"""Parameter-server training on 127.0.0.1: a scheduler, one server and two workers."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 420

WORKER = r'''
import json, os, sys
import numpy as np
from nas.data import open_dataset
from nas.network import OneShotNet
from nas.sampler import UniformSampler
from nas.schedule import ChannelSchedule
from nas.space import SearchSpace
from nas.train import TrainConfig, train

out = sys.argv[1]
space = SearchSpace(input_size=32, classes=10)
paths = []


class Recording(UniformSampler):
    def sample(self, *args):
        arch = super().sample(*args)
        paths.append(str(arch))
        return arch


train_set = open_dataset('digits', 'train', 32, 0).subset(np.arange(192))
val_set = open_dataset('digits', 'val', 32, 0).subset(np.arange(32))
net = OneShotNet(space=space)
sampler = Recording(space, mode='channel', fixed_blocks=(0,) * 20,
                    schedule=ChannelSchedule(warmup=False), seed=0)
cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, warmup_epochs=1, recal_images=32)
result = train(net, train_set, val_set, os.path.join(out, 'run'), cfg, sampler=sampler,
               kvstore='dist_sync')
net.save_parameters(os.path.join(out, 'worker-%d.params' % result.rank))
with open(os.path.join(out, 'worker-%d.json' % result.rank), 'w') as handle:
    json.dump({'paths': paths, 'epochs': result.epochs}, handle)
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_the_same_paths_and_end_identical(tmp_path):
    import mxnet as mx
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    base = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1',
                DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(free_port()),
                DMLC_NUM_SERVER='1', DMLC_NUM_WORKER='2', DMLC_NODE_HOST='127.0.0.1',
                DMLC_INTERFACE='lo')
    logs = []

    def start(role, *command):
        log = open(tmp_path / ('%s-%d.log' % (role, len(logs))), 'w')
        logs.append(log)
        return subprocess.Popen(list(command), env=dict(base, DMLC_ROLE=role), stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(tmp_path))

    procs = [start('scheduler', sys.executable, '-c', 'import mxnet'),
             start('server', sys.executable, '-c', 'import mxnet')]
    workers = [start('worker', sys.executable, str(script), str(tmp_path)) for _ in range(2)]
    procs += workers
    try:
        deadline = time.time() + TIMEOUT_S
        for worker in workers:
            worker.wait(timeout=max(1, deadline - time.time()))
        assert [w.returncode for w in workers] == [0, 0], _tail(tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail('distributed run did not finish in %d s\n%s' % (TIMEOUT_S, _tail(tmp_path)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for log in logs:
            log.close()

    reports = [json.load(open(tmp_path / ('worker-%d.json' % r))) for r in (0, 1)]
    assert reports[0]['paths'] == reports[1]['paths'] and len(reports[0]['paths']) == 3 * 6
    weights = [mx.nd.load(str(tmp_path / ('worker-%d.params' % r))) for r in (0, 1)]
    assert set(weights[0]) == set(weights[1])
    for name in weights[0]:  # trained weights and BN statistics alike
        np.testing.assert_array_equal(weights[0][name].asnumpy(), weights[1][name].asnumpy(),
                                      err_msg=name)
    losses = [e['loss'] for e in reports[0]['epochs']]  # global loss over both shards
    assert losses == [e['loss'] for e in reports[1]['epochs']]
    assert losses[-1] < losses[0], losses
    run = tmp_path / 'run'  # rank 0 wrote the run directory
    assert os.path.isfile(run / 'metrics.jsonl') and os.listdir(run / 'checkpoints')


def _tail(folder):
    text = []
    for name in sorted(os.listdir(folder)):
        if name.endswith('.log'):
            with open(os.path.join(folder, name)) as handle:
                text.append('--- %s\n%s' % (name, handle.read()[-1500:]))
    return '\n'.join(text)
