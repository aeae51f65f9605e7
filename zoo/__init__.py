"""The oneshot-nas model zoo: ``from zoo import load_model`` (a network with its weights)."""
import nas  # noqa: F401  (clear error when MXNet is missing)
from .registry import (ModelCard, get_model, list_models, get_card, register_model,
                       user_zoo_dir, import_weights)
from .store import get_model_file, purge, default_root
from .loading import PRETRAINED, RANDOM, LoadedModel, load_model

__all__ = ['ModelCard', 'get_model', 'list_models', 'get_card', 'register_model',
           'user_zoo_dir', 'import_weights', 'get_model_file', 'purge', 'default_root',
           'PRETRAINED', 'RANDOM', 'LoadedModel', 'load_model']
