"""Writes are all or nothing: a failure part-way leaves the previous file (or none) and no
temporary behind, and it surfaces as one error line from the CLIs."""
import os
import resource
import subprocess
import sys

import pytest

from nas.atomic import atomic_paths, read_json, write_json, write_text
from nas.errors import OutputError, ProfilingError


def _listing(folder):
    return sorted(os.listdir(folder))


def test_written_file_follows_the_umask_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'a.json'
    write_json(str(path), {'x': 1})
    assert path.read_text() == '{"x": 1}'
    assert _listing(tmp_path) == ['a.json']
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_failure_while_writing_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'state.txt'
    write_text(str(path), 'old')
    with pytest.raises(RuntimeError):
        with atomic_paths(str(path)) as (temp,):
            with open(temp, 'w') as handle:
                handle.write('half of the new')
            raise RuntimeError('killed part-way')
    assert path.read_text() == 'old'
    assert _listing(tmp_path) == ['state.txt']


def test_a_set_of_files_is_placed_all_or_none(tmp_path):
    good = tmp_path / 'model-symbol.json'
    bad = tmp_path / 'occupied'
    bad.mkdir()  # renaming a file onto a directory fails after the first file was placed
    with pytest.raises(OutputError, match='cannot write'):
        with atomic_paths(str(good), str(bad)) as temps:
            for temp in temps:
                open(temp, 'w').write('data')
    assert _listing(tmp_path) == ['occupied'] and not os.listdir(bad)


def test_overwriting_a_set_keeps_both_previous_files_when_the_second_rename_fails(
        tmp_path, monkeypatch):
    first, second = tmp_path / 'net-symbol.json', tmp_path / 'net-0000.params'
    first.write_text('old symbol')
    second.write_text('old params')
    replace = os.replace

    def fail_placing_second(src, dst):
        if str(dst) == str(second) and str(src).endswith('.tmp'):
            raise OSError(28, 'No space left on device')
        replace(src, dst)

    monkeypatch.setattr(os, 'replace', fail_placing_second)
    with pytest.raises(OutputError, match='No space left'):
        with atomic_paths(str(first), str(second)) as temps:
            for temp in temps:
                open(temp, 'w').write('new')
    assert first.read_text() == 'old symbol' and second.read_text() == 'old params'
    assert _listing(tmp_path) == ['net-0000.params', 'net-symbol.json']  # no temporary left


def test_overwriting_a_set_replaces_every_file(tmp_path):
    paths = [tmp_path / 'a', tmp_path / 'b']
    for path in paths:
        path.write_text('old')
    with atomic_paths(*map(str, paths)) as temps:
        for temp, text in zip(temps, ('new a', 'new b')):
            open(temp, 'w').write(text)
    assert [p.read_text() for p in paths] == ['new a', 'new b'] and _listing(tmp_path) == ['a', 'b']


def test_data_and_directory_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: events.append(('fsync', os.readlink(
        '/proc/self/fd/%d' % fd))) or fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda src, dst: events.append(('rename', dst)) or
                        replace(src, dst))
    target = str(tmp_path / 'x.json')
    write_json(target, {'x': 1})
    kinds = [kind for kind, _ in events]
    assert kinds == ['fsync', 'rename', 'fsync']
    assert events[0][1].endswith('.tmp') and events[2][1] == str(tmp_path)


@pytest.mark.parametrize('content,fragment', [
    (None, 'cannot read latency table .*x.json: No such file'),
    ('{"a": [1, 2', r'x.json is not a valid latency table: invalid JSON \(Expecting'),
    (b'\xff\xfe{}', r'x.json is not a valid latency table: invalid JSON \(.*utf-8'),
])
def test_read_json_names_the_file_and_what_it_should_be(tmp_path, content, fragment):
    path = tmp_path / 'x.json'
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ProfilingError, match=fragment + '.*; measure it again'):
        read_json(str(path), ProfilingError, 'latency table', 'measure it again')
    write_json(str(path), {'a': [1, 2]})
    assert read_json(str(path), ProfilingError, 'latency table') == {'a': [1, 2]}


def test_missing_directory_names_the_path(tmp_path):
    target = tmp_path / 'no' / 'such' / 'dir' / 'x.json'
    with pytest.raises(OutputError, match='cannot write .*x.json'):
        write_json(str(target), {})


@pytest.mark.slow
@pytest.mark.parametrize('kind,name', [('--onnx', 'net.onnx'), ('--mxnet', 'net')])
def test_cli_write_cut_off_by_a_full_disk_leaves_nothing(tmp_path, kind, name):
    """A file-size limit makes the write fail part-way, as a full disk would."""
    out = tmp_path / name

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    done = subprocess.run(
        [sys.executable, '-c', 'from cli.export import main; main()', kind, 'oneshot',
         '--input-size', '32', '-o', str(out)],
        preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'cannot write' in lines[0], done.stderr
    assert 'File too large' in lines[0] or 'Check failed' in lines[0], lines
    assert 'Traceback' not in done.stderr
    assert _listing(tmp_path) == []
