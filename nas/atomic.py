"""Every file the project writes goes through a temporary file beside its target and a rename,
so that a crash, a kill or a full disk part-way through leaves the previous file (or none),
never half of a new one. The rename is atomic because the temporary is in the same directory.
"""
import contextlib
import csv
import json
import os
import tempfile

from mxnet.base import MXNetError

from .errors import OutputError, error_reason

__all__ = ['temp_beside', 'atomic_paths', 'write_text', 'write_json',
           'write_csv', 'save_params']


@contextlib.contextmanager
def temp_beside(path, error=OutputError):
    """Yield a new empty temporary file in ``path``'s directory; it is removed on exit unless
    the body renamed it. Its permissions follow the umask like any new file (mkstemp's 0600
    would outlive the rename)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        handle, temp = tempfile.mkstemp(prefix='.%s.' % name, suffix='.tmp', dir=folder)
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
    Files written together are placed all or none: a file without its partners is useless.
    An OSError while writing or renaming, or an MXNetError from MXNet's own file writers,
    becomes one ``error('cannot write ...')``."""
    placed = []
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(temp_beside(path, error)) for path in paths]
        try:
            yield temps
            for temp, path in zip(temps, paths):
                os.replace(temp, path)
                placed.append(path)
        except (OSError, MXNetError) as err:
            reason = getattr(err, 'strerror', None) or error_reason(err)
            raise error('cannot write %s: %s' % (', '.join(map(str, paths)), reason)) from err
        finally:
            if len(placed) < len(paths):
                for path in placed:
                    os.remove(path)


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
