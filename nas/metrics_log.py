"""The metrics of a training run: ``metrics.jsonl`` (one JSON object per step, ``"kind":
"step"``, and per epoch, ``"epoch"``) and the curve drawn from it."""
import json
import os

from .atomic import write_text
from .errors import TrainingError

__all__ = ['METRICS', 'CURVE', 'read_metrics', 'MetricsLog', 'plot_curves']

METRICS = 'metrics.jsonl'
CURVE = 'curve.png'


def read_metrics(path):
    """The records of a metrics.jsonl file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class MetricsLog:
    """metrics.jsonl of the chief (other workers write nothing); on resume, records past the
    checkpoint are dropped so the file reads like the uninterrupted run's."""

    def __init__(self, path, chief):
        self.path, self.chief = path, chief
        self._records = []

    def open(self, position):
        """Start the file, keeping the records up to ``position`` (a checkpoint's) if given."""
        if not self.chief:
            return
        kept = []
        if position is not None and os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path)
                    if (r['kind'] == 'step' and r['step'] <= position['step'])
                    or (r['kind'] == 'epoch' and r['epoch'] < position['epoch'])]
        write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept), error=TrainingError)
        self._records = kept

    def epochs(self):
        """The epoch records kept by ``open``."""
        return [r for r in self._records if r['kind'] == 'epoch']

    def write(self, record):
        if not self.chief:
            return
        try:
            with open(self.path, 'a') as handle:
                handle.write(json.dumps(record) + '\n')
        except OSError as err:
            raise TrainingError('cannot write %s: %s' % (self.path, err.strerror or err)) from None


def plot_curves(metrics_path, png_path):
    """Training curve: loss per step (and per epoch), train and validation top-1 per epoch."""
    from .plots import new_figure, save_figure
    records = read_metrics(metrics_path)
    steps = [r for r in records if r['kind'] == 'step']
    epochs = [r for r in records if r['kind'] == 'epoch']
    fig, (loss_ax, top1_ax) = new_figure(ncols=2)
    loss_ax.plot([r['step'] for r in steps], [r['loss'] for r in steps], lw=0.6, alpha=0.6,
                 label='step')
    loss_ax.plot([r['step'] for r in epochs], [r['loss'] for r in epochs], 'o-', label='epoch mean')
    loss_ax.set_xlabel('step')
    loss_ax.set_ylabel('training loss (label-smoothed)')
    loss_ax.legend()
    top1_ax.plot([r['epoch'] + 1 for r in epochs], [100 * r['top1'] for r in epochs], 'o-',
                 label='train')
    val = [r for r in epochs if r.get('val_top1') is not None]
    top1_ax.plot([r['epoch'] + 1 for r in val], [100 * r['val_top1'] for r in val], 's-',
                 label='validation')
    top1_ax.set_xlabel('epoch')
    top1_ax.set_ylabel('top-1 (%)')
    top1_ax.legend()
    for ax in (loss_ax, top1_ax):
        ax.grid(alpha=0.3)
    return save_figure(fig, png_path)
