"""Checkpoints of a training run: ``run_dir/checkpoints/ckpt-<step>/`` holds whatever the run
hands over (weights, optimizer states, state.json), written into a temporary folder and renamed,
so a kill leaves the earlier checkpoints intact; only the last K are kept. Also the Python and
NumPy generator states that a resumed run restores to repeat the uninterrupted one."""
import json
import logging
import os
import random
import shutil
import tempfile

import mxnet as mx
import numpy as np

from .atomic import read_json
from .errors import TrainingError

__all__ = ['CHECKPOINTS', 'STATE', 'prepare_run_dir', 'latest_checkpoint', 'write_checkpoint',
           'read_state', 'random_state', 'set_random_state']

log = logging.getLogger(__name__)

CHECKPOINTS = 'checkpoints'
STATE = 'state.json'


def prepare_run_dir(run_dir, resume):
    """Create ``run_dir`` and prove it writable; refuse to start over an existing run."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.probe-', dir=run_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise TrainingError('cannot write to output directory %s: %s'
                            % (run_dir, err.strerror or err)) from None
    if not resume and latest_checkpoint(run_dir) is not None:
        raise TrainingError('%s already holds checkpoints of a run; pass --resume to continue '
                            'it or choose a new output directory' % run_dir)


def latest_checkpoint(run_dir):
    """Path of the newest complete checkpoint of ``run_dir``, or None."""
    folder = os.path.join(os.fspath(run_dir), CHECKPOINTS)
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder)
                   if n.startswith('ckpt-') and os.path.isfile(os.path.join(folder, n, STATE)))
    return os.path.join(folder, names[-1]) if names else None


def write_checkpoint(run_dir, step, keep, writers, state):
    """Write every ``name -> writer(path)`` and ``state`` (as state.json) into a temp dir, rename
    it to ckpt-<step>, keep the newest ``keep``."""
    folder = os.path.join(run_dir, CHECKPOINTS)
    target = os.path.join(folder, 'ckpt-%09d' % step)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.tmp-', dir=folder)
    except OSError as err:
        raise TrainingError('cannot write checkpoint in %s: %s' % (folder, err.strerror or err))
    try:
        for name, writer in writers.items():
            writer(os.path.join(tmp, name))
        with open(os.path.join(tmp, STATE), 'w') as handle:
            json.dump(state, handle)
        if os.path.isdir(target):  # rewritten after a resume: replace the old one
            shutil.rmtree(target)
        os.rename(tmp, target)
    except (OSError, mx.base.MXNetError) as err:
        raise TrainingError('cannot write checkpoint %s (%s); the earlier checkpoints are intact'
                            % (target, err)) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    names = sorted(n for n in os.listdir(folder) if n.startswith('ckpt-'))
    for name in names[:-keep]:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return target


def read_state(path):
    """state.json of the checkpoint folder ``path``."""
    return read_json(os.path.join(path, STATE), TrainingError, 'checkpoint state',
                     'delete the checkpoint %s to resume from the one before' % path)


def random_state():
    """The Python and NumPy global generator states, JSON-ready."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    return {'python_random': [py_version, list(py_state), py_gauss],
            'numpy_random': [np_state[0], np_state[1].tolist()] + list(np_state[2:])}


def set_random_state(state):
    """Restore what ``random_state`` recorded."""
    version, py_state, gauss = state['python_random']
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state['numpy_random']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
