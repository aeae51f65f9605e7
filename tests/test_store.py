"""The weight store and the user zoo under damage and concurrency: a damaged card is skipped
with one warning, concurrent imports all land in the manifest, a damaged manifest is rebuilt
from the stored files (never answered with "purge everything")."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import pytest
from click.testing import CliRunner

import zoo
from nas.errors import WeightsError
from cli.score import main as score_cli
from cli.zoo import main as zoo_cli
from zoo import store

NAMES = ('tiny_a', 'tiny_b', 'tiny_c')


@pytest.fixture
def root(tmp_path, tiny_arch):
    """A store whose user zoo has three small models, NAMES."""
    path = str(tmp_path / 'store')
    for name in NAMES:
        zoo.register_model(name, tiny_arch, root=path)
    return path


@pytest.fixture
def weight_files(tmp_path, root):
    paths = {}
    for seed, name in enumerate(NAMES):
        paths[name] = str(tmp_path / ('%s.params' % name))
        mx.random.seed(seed)
        zoo.get_model(name, root=root).save_parameters(paths[name])
    return paths


def _damaged_card(home):
    folder = os.path.join(home, 'models', 'zoo')
    os.makedirs(folder)
    path = os.path.join(folder, 'bad.json')
    with open(path, 'w') as handle:
        handle.write('{broken')
    return path


def test_damaged_card_is_one_warning_and_every_command_keeps_working(tmp_path):
    """The user's view: a real ``nas-zoo list`` process, $MXNET_HOME with one broken card."""
    bad = _damaged_card(str(tmp_path))
    env = dict(os.environ, MXNET_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, '-c', 'from cli.zoo import main; main()', 'list'],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == sorted(
        zoo.list_models(root=str(tmp_path / 'elsewhere')))
    warnings = [line for line in done.stderr.splitlines()  # conftest's engine choice is logged
                if line.strip() and 'MXNet start using engine' not in line]
    assert len(warnings) == 1 and bad in warnings[0] and 'damaged' in warnings[0], done.stderr
    assert 'Traceback' not in done.stderr


def test_damaged_card_does_not_stop_scoring_a_builtin_model(tmp_path, monkeypatch, caplog):
    bad = _damaged_card(str(tmp_path))
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(score_cli, ['flops', 'oneshot_s_plus', '--json'])
        assert result.exit_code == 0, result.output + result.stderr
        assert json.loads(result.stdout)['flops'] == 291475944  # SPEC §2.1 via the zoo card
        assert zoo.list_models() == sorted(zoo.list_models(root=str(tmp_path / 'none')))
    assert [r.getMessage() for r in caplog.records].count(
        [r.getMessage() for r in caplog.records if bad in r.getMessage()][0]) == 1


@pytest.mark.parametrize('content', ['[1, 2]', '{"name": "x", "blocks": 7, "channels": 1}',
                                     '{"blocks": [0], "channels": [0]}', '\xff\xfe'])
def test_cards_that_are_json_but_not_cards_are_skipped(tmp_path, content, caplog):
    folder = tmp_path / 'zoo'
    folder.mkdir()
    (folder / 'odd.json').write_text(content, errors='surrogateescape')
    with caplog.at_level(logging.WARNING):
        assert zoo.list_models(root=str(tmp_path)) == sorted(zoo.list_models(
            root=str(tmp_path / 'none')))
    assert any('odd.json' in r.getMessage() for r in caplog.records)


_SLOW_IMPORT = textwrap.dedent('''
    import os, sys, time
    from zoo import store
    folder, count = sys.argv[1], int(sys.argv[2])
    lock, read = store.file_lock, store._read_manifest

    def lock_after_everyone_arrived(path, **kwargs):
        open(os.path.join(folder, 'arrived-%d' % os.getpid()), 'w').close()
        while len([f for f in os.listdir(folder) if f.startswith('arrived-')]) < count:
            time.sleep(0.01)
        return lock(path, **kwargs)

    def slow_read(root):  # widens the read-modify-write window to half a second
        data = read(root)
        time.sleep(0.5)
        return data

    store.file_lock, store._read_manifest = lock_after_everyone_arrived, slow_read
    from cli.zoo import main
    main(sys.argv[3:])
''')


def test_concurrent_imports_all_land_in_the_manifest(tmp_path, root, weight_files):
    """Three imports reach the manifest update together (each waits for the others), each with
    a slow read: without the lock, each would write a manifest of its own model only."""
    sync = tmp_path / 'sync'
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, '-c', _SLOW_IMPORT, str(sync), str(len(NAMES)),
                               'import', name, weight_files[name], '--root', root],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in NAMES]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert len(os.listdir(sync)) == len(NAMES)  # all three were there before any wrote
    manifest = json.load(open(os.path.join(root, store.MANIFEST)))
    assert sorted(manifest) == sorted(NAMES)
    for name in NAMES:
        assert os.path.basename(zoo.get_model_file(name, root)).startswith(name + '-')


def test_damaged_manifest_is_rebuilt_from_the_stored_files(root, weight_files, caplog):
    stored = {name: zoo.import_weights(name, weight_files[name], root=root) for name in NAMES}
    manifest_path = os.path.join(root, store.MANIFEST)
    whole = json.load(open(manifest_path))
    text = open(manifest_path).read()
    with open(manifest_path, 'w') as handle:
        handle.write(text[:len(text) // 2])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):  # reads work at once, from a rebuilt manifest
        assert zoo.get_model_file('tiny_b', root) == stored['tiny_b']
    assert any('damaged' in r.getMessage() for r in caplog.records)
    data = bytearray(open(stored['tiny_a'], 'rb').read())  # and one file is damaged too
    data[len(data) // 2] ^= 0xFF
    open(stored['tiny_a'], 'wb').write(bytes(data))
    result = CliRunner().invoke(zoo_cli, ['repair', '--root', root])
    assert result.exit_code == 0, result.output + result.stderr
    assert 'skipped %s' % os.path.basename(stored['tiny_a']) in result.stdout
    repaired = json.load(open(manifest_path))
    assert repaired == {k: v for k, v in whole.items() if k != 'tiny_a'}
    assert os.path.exists(stored['tiny_a'])  # nothing deleted: the user decides
    with pytest.raises(WeightsError, match='no pretrained weights'):
        zoo.get_model_file('tiny_a', root)


def test_reimport_replaces_the_old_file_only_after_the_manifest(tmp_path, root, weight_files):
    first = zoo.import_weights('tiny_a', weight_files['tiny_a'], root=root)
    net = zoo.get_model('tiny_a', root=root)
    bias = net.output.bias
    bias.set_data(bias.data() + 1)
    other = str(tmp_path / 'other.params')
    net.save_parameters(other)
    second = zoo.import_weights('tiny_a', other, root=root)
    assert second != first and not os.path.exists(first)
    assert zoo.get_model_file('tiny_a', root) == second
    assert sorted(os.listdir(root)) == sorted(['.lock', store.MANIFEST, 'zoo',
                                               os.path.basename(second)])
