"""What a training run is asked to do (``TrainConfig``), the SPEC §3 recipes that fill it in, and
what a run reports (``TrainResult``)."""
from dataclasses import dataclass, field, replace
from typing import Optional

from .errors import TrainingError

__all__ = ['DTYPES', 'TrainConfig', 'TrainResult', 'subnet_recipe', 'supernet_recipe']

DTYPES = ('float32', 'bfloat16', 'float16')


@dataclass(frozen=True)
class TrainConfig:
    """Recipe and bookkeeping. A bare ``TrainConfig()`` is the supernet recipe (SPEC §3.3); the
    entry points fill in their own recipe when given no config (``subnet_recipe``,
    ``supernet_recipe``).

    ``batch_size`` is the batch of one worker, split over its devices; ``checkpoint_every`` adds
    a checkpoint every N steps to the one at each epoch end; ``val_paths`` random supernet paths
    are validated per epoch after BN recalibration on ``recal_images`` training images; ``dtype``
    is the compute precision (``nas.precision``; weights, BN statistics and the loss stay float32).
    """
    epochs: int = 120
    batch_size: int = 64
    lr: float = 0.65
    wd: float = 4e-5
    momentum: float = 0.9
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    data_workers: int = 0
    augment: Optional[str] = None
    val_paths: int = 1
    recal_images: int = 20000
    dtype: str = 'float32'

    def __post_init__(self):
        for name in ('epochs', 'batch_size', 'keep_checkpoints', 'val_paths', 'recal_images'):
            if int(getattr(self, name)) < 1:
                raise TrainingError('%s must be >= 1, got %r' % (name, getattr(self, name)))
        for name in ('lr', 'wd', 'warmup_epochs', 'checkpoint_every', 'data_workers'):
            if not getattr(self, name) >= 0:  # NaN too
                raise TrainingError('%s must be >= 0, got %r' % (name, getattr(self, name)))
        if not 0 <= self.momentum < 1 or not 0 <= self.label_smoothing < 1:
            raise TrainingError('momentum and label smoothing must lie in [0, 1)')
        if self.dtype not in DTYPES:
            raise TrainingError('unknown dtype %r; use one of %s' % (self.dtype, ', '.join(DTYPES)))


def subnet_recipe(batch_size=1024, **overrides):
    """SPEC §3.2: 360 epochs, weight decay 3e-5, LR 1.3 at batch 1024 (scaled linearly with
    ``batch_size`` unless ``lr`` is given), plus the §3.1 common part."""
    overrides.setdefault('lr', 1.3 * batch_size / 1024)
    return replace(TrainConfig(epochs=360, wd=3e-5, batch_size=batch_size), **overrides)


def supernet_recipe(batch_size=64, **overrides):
    """SPEC §3.3 (the scripts): 120 epochs, LR 0.65 at batch 64, weight decay 4e-5."""
    return replace(TrainConfig(epochs=120, lr=0.65, wd=4e-5, batch_size=batch_size), **overrides)


@dataclass
class TrainResult:
    """What a finished run reports: per-epoch records (as in metrics.jsonl) and the totals."""
    run_dir: str
    epochs: list = field(default_factory=list)
    steps: int = 0
    val_top1: Optional[float] = None
    skipped_images: int = 0  # unreadable training images, skipped (see the log for each)
    rank: int = 0  # of this worker; only rank 0 writes the run directory
