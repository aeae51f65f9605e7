"""Every file the project writes goes through a temporary file beside its target and a rename,
so that a crash, a kill or a full disk part-way through leaves the previous file (or none),
never half of a new one. The rename is atomic because the temporary is in the same directory;
the data is fsynced before it and the directory after it, so a power cut cannot leave an empty
file under the final name. ``file_lock`` serialises read-modify-write updates (the weight
store's manifest, the user zoo) between processes.
"""
import contextlib
import csv
import fcntl
import json
import os
import tempfile

from mxnet.base import MXNetError

from .errors import OutputError, error_reason

__all__ = ['temp_beside', 'atomic_paths', 'file_lock', 'write_text', 'write_json',
           'write_csv', 'save_params', 'read_json']


@contextlib.contextmanager
def temp_beside(path, error=OutputError, suffix='.tmp'):
    """Yield a new empty temporary file in ``path``'s directory; it is removed on exit unless
    the body renamed it. Its permissions follow the umask like any new file (mkstemp's 0600
    would outlive the rename)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        handle, temp = tempfile.mkstemp(prefix='.%s.' % name, suffix=suffix, dir=folder)
        os.close(handle)
        os.chmod(temp, 0o666 & ~_umask())
    except OSError as err:
        raise error('cannot write %s: %s; check that the directory exists and is writable'
                    % (path, err.strerror or err)) from err
    try:
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)


@contextlib.contextmanager
def atomic_paths(*paths, error=OutputError):
    """Yield one temporary path per target; when the body succeeds, move each onto its target.
    Files written together are placed all or none: a file without its partners is useless, so
    the previous versions are renamed aside until every new file is in place and restored if
    one cannot be placed. An OSError while writing or renaming, or an MXNetError from MXNet's
    own file writers, becomes one ``error('cannot write ...')``."""
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(temp_beside(path, error)) for path in paths]
        try:
            yield temps
            for temp in temps:
                _fsync(temp)
            if len(paths) == 1:
                os.replace(temps[0], paths[0])
            else:
                asides = [stack.enter_context(temp_beside(path, error, '.old'))
                          if os.path.lexists(path) else None for path in paths]
                _place_together(temps, paths, asides)
            for folder in {os.path.dirname(os.path.abspath(path)) for path in paths}:
                _fsync(folder)
        except (OSError, MXNetError) as err:
            reason = getattr(err, 'strerror', None) or error_reason(err)
            raise error('cannot write %s: %s' % (', '.join(map(str, paths)), reason)) from err


def _place_together(temps, paths, asides):
    """Old files to ``asides``, new ones onto ``paths``; on any failure, back as they were."""
    moved, placed = [], []
    try:
        for path, aside in zip(paths, asides):
            if aside is not None:
                os.replace(path, aside)
                moved.append((aside, path))
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            os.remove(path)
        for aside, path in moved:
            os.replace(aside, path)
        raise


def _fsync(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def file_lock(path, error=OutputError):
    """Hold an exclusive lock on ``path`` (created if missing) for the body: other processes
    (and threads) taking it wait, so a read-modify-write of a shared file loses no update."""
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise error('cannot lock %s: %s; check that the directory exists and is writable'
                    % (path, err.strerror or err)) from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def read_json(path, error, what, advice=''):
    """The data of the JSON file ``path``. A file that cannot be read or is not JSON becomes one
    ``error`` naming the file and saying it should be ``what`` (e.g. 'latency table'), then
    ``advice`` (what to do)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except OSError as err:
        message, cause = 'cannot read %s %s: %s' % (what, path, err.strerror or err), err
    except ValueError as err:  # invalid JSON or text that is not UTF-8
        message, cause = '%s is not a valid %s: invalid JSON (%s)' % (path, what, err), err
    raise error(message + ('; ' + advice if advice else '')) from cause


def write_text(path, text, error=OutputError):
    with atomic_paths(path, error=error) as (temp,):
        with open(temp, 'w', newline='') as handle:
            handle.write(text)
    return path


def write_json(path, data, error=OutputError, **dump_options):
    return write_text(path, json.dumps(data, **dump_options), error)


def write_csv(path, header, rows, error=OutputError):
    """A CSV file of ``header`` and then ``rows`` (sequences of cells)."""
    with atomic_paths(path, error=error) as (temp,):
        with open(temp, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return path


def save_params(net, path, error=OutputError):
    """``net.save_parameters`` through a temporary file."""
    with atomic_paths(path, error=error) as (temp,):
        net.save_parameters(temp)
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
