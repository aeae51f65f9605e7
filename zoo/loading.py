"""``load_model``: the one way to get a network with weights, used by every command.

A model is named by a zoo or user-zoo name, an architecture JSON file, a gluoncv model name or,
where the caller runs ONNX graphs, an ``.onnx`` file. Weights come from the sha1-verified store,
from a ``.params`` file checked against the architecture, or from nowhere: then the network keeps
its random initialisation and a warning naming the model goes to the log (stderr unless logging
is configured otherwise), whichever door the model came in by.
"""
import dataclasses
import logging
import os
from typing import Optional

import mxnet as mx

from nas.errors import UnknownModelError, WeightsError
from nas.network import OneShotNet
from nas.params_io import load_params_checked
from nas.space import Arch
from . import store
from .registry import build_from_card, get_card, list_models

__all__ = ['PRETRAINED', 'RANDOM', 'LoadedModel', 'load_model']

log = logging.getLogger(__name__)
PRETRAINED = 'pretrained'
RANDOM = 'random'  # asked for on purpose (counting, timing): no warning
_GLUONCV_INPUT_SIZE = 224
_MICRONET_REFERENCE = 'mobilenetv2_1.4'  # not in gluoncv's name list, built by width


@dataclasses.dataclass
class LoadedModel:
    """A loaded model: ``net`` is None for an ONNX file (``onnx`` is its path); ``arch`` is None
    for gluoncv models, the supernet and ONNX files; ``weights`` is the file the weights came
    from (None: random); ``input_size`` is the side the network expects (None for an ONNX file
    unless it was given)."""
    name: str
    net: Optional[mx.gluon.Block]
    arch: Optional[Arch]
    weights: Optional[str]
    input_size: Optional[int]
    onnx: Optional[str] = None


def load_model(model, weights=None, root=None, classes=None, input_size=None, ctx=None,
               onnx=False):
    """Build ``model`` and give it weights.

    ``weights``: None uses the store's verified weights of a zoo name when the store has them,
    else random weights (logged as a warning naming the model); ``'pretrained'`` requires the
    store's weights; ``'random'`` asks for random weights on purpose (no warning); a path loads
    that ``.params`` file after checking every tensor against the architecture. ``classes`` / ``input_size`` override the architecture's; ``root`` is the model
    store and user zoo (default ``$MXNET_HOME/models``); ``onnx=True`` accepts an ``.onnx`` file,
    returned as a path since it carries its own weights.
    """
    model = str(model)
    if model.lower().endswith('.onnx'):
        return _onnx_model(model, weights, input_size, onnx)
    net, arch, card = _build(model, classes, input_size, root)
    path = _weights_file(model, weights, root, in_zoo=card is not None)
    ctx = ctx or mx.cpu()
    if path:
        load_params_checked(net, path, ctx=ctx)
    else:
        net.initialize(ctx=ctx)
    if not path and weights != RANDOM:
        hint = ('none given and none in the model store; give --params FILE (Python: weights='
                'FILE) or store them with nas-zoo import %s FILE' % model if card is not None
                else 'none given; give --params FILE (Python: weights=FILE)')
        log.warning('random weights for %s: %s', model, hint)
    space = card.space if card is not None else arch.space if arch is not None else None
    size = input_size or (space.input_size if space is not None else _GLUONCV_INPUT_SIZE)
    return LoadedModel(model, net, arch, path, size)


def _onnx_model(path, weights, input_size, allowed):
    if not allowed:
        raise UnknownModelError('%s is an ONNX file; this needs a zoo name, an architecture JSON '
                                'or a gluoncv model name' % path)
    if weights is not None:
        raise WeightsError('%s is an ONNX file and carries its own weights; drop --params / '
                           '--pretrained' % path)
    if not os.path.isfile(path):
        raise UnknownModelError('ONNX file %s does not exist' % path)
    return LoadedModel(path, None, None, path, input_size, onnx=path)


def _build(model, classes, input_size, root):
    """(uninitialised network, arch or None, zoo card or None) of a model name or file."""
    if model.endswith('.json') or os.path.sep in model:
        if not os.path.isfile(model):
            raise UnknownModelError('architecture file %s does not exist' % model)
        arch = Arch.load(model).with_space(classes=classes, input_size=input_size)
        return OneShotNet(arch), arch, None
    if model in list_models(root=root):
        card = get_card(model, root)
        net = build_from_card(card, classes=classes, input_size=input_size)
        return net, net.arch, card
    net = _gluoncv_model(model, classes)
    if net is None:
        get_card(model, root)  # raises, with close matches
    return net, None, None


def _gluoncv_model(name, classes):
    from gluoncv.model_zoo import get_model_list, get_model as gluoncv_get
    from gluoncv.model_zoo.mobilenet import get_mobilenet_v2
    kwargs = {'classes': classes} if classes else {}
    name = name.lower()
    if name == _MICRONET_REFERENCE:
        return get_mobilenet_v2(1.4, **kwargs)
    if name in get_model_list():
        return gluoncv_get(name, pretrained=False, **kwargs)
    return None


def _weights_file(model, weights, root, in_zoo):
    """The weights file to load for ``weights`` (see ``load_model``), or None for random."""
    if weights == RANDOM:
        return None
    if weights is None:
        # an entry that is absent means random weights; a corrupt or missing file still fails
        return store.get_model_file(model, root) if in_zoo and store.has_weights(model, root) \
            else None
    if weights == PRETRAINED:
        if not in_zoo:
            raise WeightsError('%s is not a zoo model, so the model store has no weights for it; '
                               'give a weights file (--params FILE)' % model)
        return store.get_model_file(model, root)
    weights = str(weights)
    if not os.path.isfile(weights):
        raise WeightsError('weights file %s does not exist' % weights)
    return weights
