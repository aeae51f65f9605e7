"""The oneshot-nas model zoo: ``from zoo import get_model``."""
import nas  # noqa: F401  (clear error when MXNet is missing)
from .registry import (ModelCard, get_model, list_models, get_card, register_model,
                       resolve_model, user_zoo_dir, import_weights)
from .store import get_model_file, purge, default_root

__all__ = ['ModelCard', 'get_model', 'list_models', 'get_card', 'register_model',
           'resolve_model', 'user_zoo_dir', 'import_weights', 'get_model_file', 'purge',
           'default_root']
