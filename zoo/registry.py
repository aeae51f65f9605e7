"""The model zoo: named model cards, ``get_model``, ``list_models`` and the user zoo.

Built-in cards are the SPEC §2.1 subnets plus the supernet. Users add their own searched models
with ``register_model`` (``nas-search --register`` / ``nas-zoo register``); those cards are JSON
files under ``{root}/zoo`` so they travel with the weight store.
"""
import difflib
import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import mxnet as mx

from nas.atomic import file_lock, read_json, write_json
from nas.errors import ArchError, UnknownModelError, WeightsError
from nas.network import OneShotNet
from nas.params_io import load_params_checked
from nas.space import Arch, SearchSpace
from . import store

__all__ = ['ModelCard', 'get_model', 'list_models', 'get_card', 'register_model',
           'build_from_card', 'user_zoo_dir', 'import_weights', 'model_info']

_SE_PLUS = SearchSpace(use_se=True, last_conv_after_pooling=True)
_NAME_PATTERN = re.compile(r'^[a-z][a-z0-9_]{0,63}$')
_CARD_KEYS = ('name', 'description', 'source', 'published_top1', 'published_top5',
              'published_note')
_LOCK = '.lock'
log = logging.getLogger(__name__)
_reported = set()  # damaged cards already warned about in this process


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know to pick a model; ``arch`` is None for the supernet."""
    name: str
    description: str
    arch: Optional[Arch] = None
    supernet_space: Optional[SearchSpace] = None  # only for the supernet card
    published_top1: Optional[float] = None  # seed README figures on ImageNet, not measured here
    published_top5: Optional[float] = None
    source: str = 'builtin'
    extra: dict = field(default_factory=dict)

    @property
    def space(self):
        return self.arch.space if self.arch is not None else self.supernet_space

    def to_dict(self):
        data = {'name': self.name, 'description': self.description, 'source': self.source,
                'published_top1': self.published_top1, 'published_top5': self.published_top5,
                'published_note': 'ImageNet top-1/top-5 published by the reference '
                                  'implementation, not measured here'
                                  if self.published_top1 is not None else None}
        data.update(self.arch.to_dict() if self.arch else {
            'blocks': None, 'channels': None, 'use_se': self.space.use_se,
            'last_conv_after_pooling': self.space.last_conv_after_pooling,
            'layout': self.space.layout, 'input_size': self.space.input_size,
            'classes': self.space.classes})
        data.update(self.extra)
        return data


_ONESHOT = '00311100202110202132:65352634257546744543'
_ONESHOT_S_PLUS = '00010010320122120020:87685734242345663346'
_BUILTIN = {card.name: card for card in [
    ModelCard('oneshot', 'SPOS OneShot subnet (ReLU, no SE, plain tail)',
              Arch.parse(_ONESHOT), published_top1=74.02, published_top5=91.60),
    ModelCard('oneshot_plus', 'OneShot+ : OneShot choices with SE, hard-swish and the '
              'efficient last conv', Arch.parse(_ONESHOT, _SE_PLUS),
              published_top1=75.24, published_top5=92.58),
    ModelCard('oneshot_s_plus', 'OneShot-S+ : searched with SE, hard-swish and the efficient '
              'last conv', Arch.parse(_ONESHOT_S_PLUS, _SE_PLUS),
              published_top1=75.75, published_top5=92.77),
    ModelCard('oneshot_supernet', 'SPOS supernet (SE + efficient last conv): all 4 blocks at '
              'full width per position, channel masks', supernet_space=_SE_PLUS),
]}


def user_zoo_dir(root=None):
    return os.path.join(os.path.expanduser(root or store.default_root()), 'zoo')


def _user_cards(root):
    """The user zoo's cards; a damaged one is skipped with one warning naming its file, so that
    every other model keeps working."""
    directory = user_zoo_dir(root)
    cards = {}
    if not os.path.isdir(directory):
        return cards
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith('.json'):
            continue
        path = os.path.join(directory, entry)
        try:
            card = _read_card(path)
        except (ArchError, TypeError) as err:  # TypeError: e.g. a number where a list belongs
            if path not in _reported:
                _reported.add(path)
                log.warning('skipping the damaged user-zoo card %s (%s); fix or delete it',
                            path, err)
            continue
        cards[card.name] = card
    return cards


def _read_card(path):
    data = read_json(path, ArchError, 'user-zoo card')
    if not isinstance(data, dict) or not isinstance(data.get('name'), str):
        raise ArchError('not a model card: no name')
    arch = Arch.from_dict(data)
    extra = {k: v for k, v in data.items() if k not in arch.to_dict() and k not in _CARD_KEYS}
    return ModelCard(data['name'], data.get('description', ''), arch, source='user', extra=extra)


def _all_cards(root=None):
    cards = dict(_BUILTIN)
    cards.update(_user_cards(root))
    return cards


def list_models(pattern=None, root=None):
    """Names of all models (built-in and user zoo), optionally filtered by a wildcard pattern."""
    names = sorted(_all_cards(root))
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def get_card(name, root=None):
    cards = _all_cards(root)
    if name not in cards:
        close = difflib.get_close_matches(str(name), list(cards), n=3, cutoff=0.5)
        hint = ('; did you mean %s?' % ', '.join(close)) if close else ''
        raise UnknownModelError('unknown model %r%s (known: %s)'
                                % (name, hint, ', '.join(sorted(cards))))
    return cards[name]


def build_from_card(card, classes=None, input_size=None, **kwargs):
    """The uninitialised network of a card, with optional classes / input size overrides."""
    if card.arch is None:
        space = card.space.replace(classes=classes, input_size=input_size)
        return OneShotNet(space=space, **kwargs)
    return OneShotNet(card.arch.with_space(classes=classes, input_size=input_size), **kwargs)


def get_model(name, pretrained=False, ctx=mx.cpu(), root=None, classes=None, input_size=None,
              **kwargs):
    """Build a zoo model; ``pretrained=True`` loads the sha1-verified weights from the store."""
    card = get_card(name, root)
    net = build_from_card(card, classes=classes, input_size=input_size, **kwargs)
    if pretrained:
        path = store.get_model_file(name, root)
        load_params_checked(net, path, ctx=ctx)
    else:
        net.initialize(ctx=ctx)
    return net


def model_info(name, root=None):
    """The card of ``name`` as a dict, with FLOPs and params counted from its graph (SPEC §6.1)
    and whether verified weights are in the store."""
    from nas.counting import count_net
    card = get_card(name, root)
    info = card.to_dict()
    if card.arch is not None:
        counts = count_net(build_from_card(card), (1, 3, card.space.input_size,
                                                   card.space.input_size))
        info.update(flops=counts.flops, params=counts.params)
    try:
        info['weights'] = store.get_model_file(name, root)
    except WeightsError:
        info['weights'] = None
    return info


def import_weights(name, path, root=None):
    """Check ``path`` against the architecture of ``name`` (every parameter's shape), then copy
    it atomically into the store and record its sha1. Returns the stored file's path."""
    card = get_card(name, root)
    net = build_from_card(card)
    net.initialize()
    return store.store_weights(net, name, path, root=root)


def register_model(name, arch, root=None, description='', extra=None, overwrite=False):
    """Write ``arch`` and its card into the user zoo as ``{root}/zoo/{name}.json``."""
    if not _NAME_PATTERN.match(str(name)):
        raise ArchError('model name %r is invalid: use lower-case letters, digits and _, '
                        'starting with a letter' % (name,))
    if name in _BUILTIN:
        raise ArchError('%r is a built-in model; choose another name' % name)
    directory = user_zoo_dir(root)
    path = os.path.join(directory, name + '.json')
    os.makedirs(directory, exist_ok=True)
    data = dict(arch.to_dict(), name=name, description=description, source='user')
    data.update(extra or {})
    with file_lock(os.path.join(directory, _LOCK), error=ArchError):  # check, then write
        if os.path.exists(path) and not overwrite:
            raise ArchError('model %r is already registered (%s); pass overwrite=True / '
                            '--overwrite' % (name, path))
        write_json(path, data, error=ArchError, indent=2, sort_keys=True)
    return path
