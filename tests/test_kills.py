"""SIGKILL at the worst moment -- a finished temporary file about to be renamed onto the output --
during ``nas-export``, ``nas-quantize`` and ``nas-profile --latency-table`` leaves the previous
output or none, never a half-written or mixed one; like the training and search kill tests
(tests/test_train.py, tests/test_search_cli.py). Files written as a set (nas-quantize's three)
are all moved aside before the first new one is placed (``nas.atomic.atomic_paths``): a kill
then leaves none, the previous set kept in hidden ``.NAME.*.old`` files."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import kill_when
from nas.space import Arch

pytestmark = pytest.mark.slow
SMALL = '01230123012301230123:00000000000000000000'

# Runs a command with os.replace held up: the first rename of a temporary file onto an output
# in the output folder touches a marker file and waits to be killed.
_HELD_RENAME = '''
import importlib, os, sys, time
marker, folder, module = sys.argv[1:4]
replace = os.replace

def held(src, dst):
    if str(src).endswith('.tmp') and os.path.dirname(os.path.abspath(dst)) == folder:
        open(marker, 'w').close()
        time.sleep(600)
    replace(src, dst)

os.replace = held
sys.argv = [module] + sys.argv[4:]
importlib.import_module(module).main()
'''


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """A small architecture JSON at 32 x 32 and weights for it."""
    from nas.network import OneShotNet
    from conftest import SE_PLUS
    folder = tmp_path_factory.mktemp('model')
    parsed = Arch.parse(SMALL)
    arch = Arch(parsed.blocks, parsed.channels, SE_PLUS.replace(input_size=32, classes=10))
    arch.save(str(folder / 'arch.json'))
    net = OneShotNet(arch)
    net.initialize()
    net.save_parameters(str(folder / 'w.params'))
    return str(folder / 'arch.json'), str(folder / 'w.params')


def _commands(model, out):
    arch, params = model
    return {
        'export': ('cli.export', ['--onnx', arch, '--params', params, '--input-size', '32',
                                  '-o', os.path.join(out, 'm.onnx')]),
        'quantize': ('cli.quantize', [arch, '--params', params, '--backend', 'mxnet',
                                      '--calib-data', 'digits', '--num-calib', '16', '--quiet',
                                      '-o', os.path.join(out, 'q')]),
        'latency-table': ('cli.profile', ['--latency-table', '--input-size', '32',
                                          '--classes', '10', '--positions', '0', '--blocks',
                                          '0', '--channels', '0', '--runs', '1', '--warmup',
                                          '0', '--chunks', '1', '--calibration', '0', '--quiet',
                                          '-o', os.path.join(out, 't.json')]),
    }


def _visible(folder, hidden=False):
    """The outputs a user sees (a killed process cannot remove its hidden temporaries), or with
    ``hidden`` the previous files moved aside, by the name they had."""
    if hidden:
        return {name[1:].rsplit('.', 2)[0]: open(os.path.join(folder, name), 'rb').read()
                for name in os.listdir(folder) if name.endswith('.old')}
    return {name: open(os.path.join(folder, name), 'rb').read()
            for name in os.listdir(folder) if not name.startswith('.')}


def _killed_at_the_rename(module, args, folder):
    marker = os.path.join(str(folder), '..', os.path.basename(str(folder)) + '.marker')
    proc = subprocess.Popen([sys.executable, '-c', _HELD_RENAME, marker,
                             os.path.abspath(str(folder)), module] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        kill_when(proc, lambda: os.path.exists(marker), 600)
    finally:
        try:  # worker processes of the timing code go with their parent
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize('command', ['export', 'quantize', 'latency-table'])
def test_sigkill_before_the_rename_keeps_the_previous_output_or_none(model, tmp_path,
                                                                    command):
    previous_dir = tmp_path / 'previous'
    previous_dir.mkdir()
    module, args = _commands(model, str(previous_dir))[command]
    done = subprocess.run([sys.executable, '-c', 'import %s as m; m.main()' % module] + args,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    previous = _visible(previous_dir)
    assert previous
    _killed_at_the_rename(module, args, previous_dir)
    left = _visible(previous_dir)
    if len(previous) == 1:
        assert left == previous  # the file as it was
    else:  # the whole previous set, or none of it and the set kept aside; never a mix
        assert left in (previous, {}) and (left or _visible(previous_dir, hidden=True)
                                           == previous)
