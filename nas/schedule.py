"""Training schedules: the per-iteration learning rate (SPEC §3.1) and the channel-selection
warm-up of the supernet (SPEC §3.4)."""
from dataclasses import dataclass

from .errors import TrainingError
from .space import LAYOUTS, NUM_SCALES

__all__ = ['learning_rate', 'warmup_offset', 'ChannelSchedule']

# SPEC §3.4: (last e of a row, d) pairs; past the last row d(e) = e.
_WARMUP_ROWS = {
    'OneShot': ((0, 0), (1, 1), (2, 2), (3, 3), (5, 4), (8, 5), (12, 6), (17, 7), (23, 8)),
    # The reference table omits e = 26 (and raises there); SPEC adopts d(26) = 6.
    'ShuffleNetV2+': ((0, 0), (2, 1), (5, 2), (9, 3), (14, 4), (20, 5), (35, 6), (36, 7)),
}


def learning_rate(step, base_lr, warmup_steps, total_steps):
    """LR of iteration ``step`` (0-based): linear 0 -> base over ``warmup_steps``, then cosine
    from base to 0 at ``total_steps`` (SPEC §3.1), by MXNet's CosineScheduler. A warm-up that
    spans the whole run has no cosine part: the LR after it is the base LR."""
    from mxnet.lr_scheduler import CosineScheduler  # here: the sampler imports us, MXNet-free
    return CosineScheduler(max(int(total_steps), int(warmup_steps) + 1), base_lr,
                           warmup_steps=int(warmup_steps))(step)


def warmup_offset(e, layout='OneShot'):
    """d(e) of the channel-selection warm-up table (SPEC §3.4), e = epochs since it started."""
    if layout not in _WARMUP_ROWS:
        raise TrainingError('no warm-up table for layout %r; known: %s'
                            % (layout, ', '.join(_WARMUP_ROWS)))
    if e < 0:
        raise TrainingError('warm-up epoch offset must be >= 0, got %d' % e)
    for last, d in _WARMUP_ROWS[layout]:
        if e <= last:
            return d
    return e


@dataclass(frozen=True)
class ChannelSchedule:
    """Which channel-scale indices a supernet path may use in an epoch (SPEC §3.4).

    Before ``start_epoch`` all channels are on (index 9). From then on indices are drawn from
    ``[lo, 9]``: with ``warmup`` lo = max(min_id, 8 - d(e)), else lo = min_id, where min_id is 2
    when ``ignore_first_two`` (scales 0.2 and 0.4 never used) and 0 otherwise.
    """
    layout: str = 'OneShot'
    start_epoch: int = 0
    warmup: bool = True
    ignore_first_two: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise TrainingError('unknown channel layout %r; known: %s'
                                % (self.layout, ', '.join(LAYOUTS)))

    def channel_range(self, epoch):
        """Inclusive (lo, hi) of the channel-scale indices allowed in ``epoch``."""
        top = NUM_SCALES - 1
        if epoch < self.start_epoch:
            return top, top
        min_id = 2 if self.ignore_first_two else 0
        if not self.warmup:
            return min_id, top
        return max(min_id, NUM_SCALES - 2 - warmup_offset(epoch - self.start_epoch,
                                                          self.layout)), top
