"""The checksum-verified weight store (gluoncv conventions).

Files live under ``root`` (default ``$MXNET_HOME/models``, i.e. ``~/.mxnet/models``) as
``{name}-{sha1[:8]}.params``; ``manifest.json`` beside them records the full sha1 of each stored
file. Published ImageNet weights cannot be downloaded here, so the only way in is ``import_weights``
(``zoo.import_weights``, ``nas-zoo import``), which checks every tensor's shape against the architecture first.
"""
import hashlib
import json
import logging
import os

from nas.atomic import temp_beside, write_json
from nas.errors import WeightsError
from nas.params_io import load_params_checked

__all__ = ['default_root', 'get_model_file', 'store_weights', 'purge', 'sha1_of', 'MANIFEST']

log = logging.getLogger(__name__)
MANIFEST = 'manifest.json'


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
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as err:
        raise WeightsError('model store manifest %s is corrupt (%s); run nas-zoo purge and '
                           're-import the weights' % (path, err)) from err
    return data if isinstance(data, dict) else {}


def _file_name(name, sha1):
    return '%s-%s.params' % (name, sha1[:8])


def get_model_file(name, root=None):
    """Path of the verified weight file of ``name``; raises ``WeightsError`` if absent or corrupt."""
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
        raise WeightsError('sha1 mismatch for %s: the file is corrupt or was modified; delete it '
                           'or run nas-zoo purge, then re-import' % os.path.basename(path))
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
        os.replace(temp, target)
    manifest = _read_manifest(root)
    old = manifest.get(name)
    if old and old != sha1:
        old_path = os.path.join(root, _file_name(name, old))
        if os.path.exists(old_path):
            os.remove(old_path)
    manifest[name] = sha1
    write_json(os.path.join(root, MANIFEST), manifest, error=WeightsError, indent=2,
               sort_keys=True)
    log.info('stored %s as %s', name, target)
    return target


def purge(root=None):
    """Remove every stored weight file and the manifest."""
    root = os.path.expanduser(root or default_root())
    if os.path.isdir(root):
        for entry in os.listdir(root):
            if entry.endswith('.params') or entry == MANIFEST:
                os.remove(os.path.join(root, entry))
