"""The checksum-verified weight store (gluoncv conventions).

Files live under ``root`` (default ``$MXNET_HOME/models``, i.e. ``~/.mxnet/models``) as
``{name}-{sha1[:8]}.params``; ``manifest.json`` beside them records the full sha1 of each stored
file. Published ImageNet weights cannot be downloaded here, so the only way in is
``import_weights`` (``zoo.import_weights``, ``nas-zoo import``), which checks every tensor's
shape against the architecture first.
Updates of the manifest hold a lock on ``{root}/.lock``, so concurrent imports lose none; a
damaged manifest is rebuilt from the stored files themselves, whose names carry their sha1.
"""
import hashlib
import logging
import os
import re

from nas.atomic import atomic_paths, file_lock, read_json, temp_beside, write_json
from nas.errors import WeightsError
from nas.params_io import load_params_checked

__all__ = ['default_root', 'has_weights', 'get_model_file', 'store_weights', 'repair', 'purge',
           'sha1_of', 'MANIFEST']

log = logging.getLogger(__name__)
MANIFEST = 'manifest.json'
_LOCK = '.lock'
_STORED = re.compile(r'^(?P<name>.+)-(?P<short>[0-9a-f]{8})\.params$')


def default_root():
    home = os.environ.get('MXNET_HOME', os.path.join(os.path.expanduser('~'), '.mxnet'))
    return os.path.join(home, 'models')


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(root):
    """name -> sha1; a damaged manifest is answered by one rebuilt from the stored files (and
    written back by the next import or ``nas-zoo repair``)."""
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return {}
    try:
        data = read_json(path, WeightsError, 'model store manifest')
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise WeightsError('%s is not a table of names and sha1s' % path)
    except WeightsError as err:
        log.warning('%s; using a manifest rebuilt from the stored weight files (nas-zoo repair '
                    'writes it)', err)
        return _rebuilt_manifest(root)[0]
    return data


def _rebuilt_manifest(root):
    """(name -> sha1, skipped files) from the ``{name}-{sha1[:8]}.params`` files whose content
    still has that sha1; of several files of one name, the newest."""
    manifest, newest, skipped = {}, {}, []
    for entry in sorted(os.listdir(root)):
        match = _STORED.match(entry)
        if not match:
            continue
        path = os.path.join(root, entry)
        sha1 = sha1_of(path)
        if not sha1.startswith(match.group('short')):
            skipped.append(entry)
            continue
        name, mtime = match.group('name'), os.path.getmtime(path)
        if mtime >= newest.get(name, -1):
            manifest[name], newest[name] = sha1, mtime
    return manifest, skipped


def repair(root=None):
    """Rewrite the manifest from the stored files (``_rebuilt_manifest``); returns
    ``(manifest, skipped)``, skipped being files whose content no longer matches their name."""
    root = os.path.expanduser(root or default_root())
    if not os.path.isdir(root):
        raise WeightsError('there is no model store at %s' % root)
    with file_lock(os.path.join(root, _LOCK), error=WeightsError):
        manifest, skipped = _rebuilt_manifest(root)
        write_json(os.path.join(root, MANIFEST), manifest, error=WeightsError, indent=2,
                   sort_keys=True)
    return manifest, skipped


def _file_name(name, sha1):
    return '%s-%s.params' % (name, sha1[:8])


def has_weights(name, root=None):
    """Whether the manifest lists weights for ``name`` (``get_model_file`` verifies them)."""
    return name in _read_manifest(os.path.expanduser(root or default_root()))


def get_model_file(name, root=None):
    """Path of the verified weight file of ``name``; ``WeightsError`` if absent or corrupt."""
    root = os.path.expanduser(root or default_root())
    sha1 = _read_manifest(root).get(name)
    if sha1 is None:
        raise WeightsError(
            'no pretrained weights for %r in the model store %s (published weights cannot be '
            'downloaded here); expected %s listed in %s. Bring your own with: '
            'nas-zoo import %s FILE.params' % (name, root, _file_name(name, '<sha1>'),
                                               os.path.join(root, MANIFEST), name))
    path = os.path.join(root, _file_name(name, sha1))
    if not os.path.exists(path):
        raise WeightsError('weights for %r are missing: expected %s; re-import them with '
                           'nas-zoo import %s FILE.params' % (name, path, name))
    if sha1_of(path) != sha1:
        raise WeightsError('sha1 mismatch for %s: the file is corrupt or was modified; delete it, '
                           'then re-import the weights with nas-zoo import %s FILE.params'
                           % (os.path.basename(path), name))
    return path


def store_weights(net, name, path, root=None):
    """Check ``path`` against ``net`` (the architecture of ``name``), then store it under the
    sha1-named file and record it in the manifest. Returns the stored path."""
    root = os.path.expanduser(root or default_root())
    if not os.path.isfile(path):
        raise WeightsError('weights file %s does not exist' % path)
    load_params_checked(net, path)
    os.makedirs(root, exist_ok=True)
    with temp_beside(os.path.join(root, name + '.params'), error=WeightsError) as temp:
        net.save_parameters(temp)  # canonical names, whatever layout the file had
        sha1 = sha1_of(temp)
        target = os.path.join(root, _file_name(name, sha1))
        with file_lock(os.path.join(root, _LOCK), error=WeightsError):
            with atomic_paths(target, error=WeightsError) as (placed,):
                os.replace(temp, placed)  # fsynced and renamed onto target by atomic_paths
            manifest = _read_manifest(root)
            old = manifest.get(name)
            manifest[name] = sha1
            write_json(os.path.join(root, MANIFEST), manifest, error=WeightsError, indent=2,
                       sort_keys=True)
            if old and old != sha1:  # only once the manifest no longer points at it
                old_path = os.path.join(root, _file_name(name, old))
                if os.path.exists(old_path):
                    os.remove(old_path)
    log.info('stored %s as %s', name, target)
    return target


def purge(root=None):
    """Remove every stored weight file and the manifest."""
    root = os.path.expanduser(root or default_root())
    if os.path.isdir(root):
        for entry in os.listdir(root):
            if entry.endswith('.params') or entry == MANIFEST:
                os.remove(os.path.join(root, entry))
