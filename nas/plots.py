"""PNG plots people read instead of tables (matplotlib, headless)."""
from .atomic import atomic_paths

__all__ = ['new_figure', 'save_figure', 'plot_pareto']

_COST_LABELS = {'flops': 'FLOPs (M)', 'params': 'params (M)', 'latency_ms': 'latency (ms)',
                'micronet': 'MicroNet score', 'combined': 'combined (0.5 F/F_ref + 0.5 P/P_ref)'}
_COST_SCALE = {'flops': 1e-6, 'params': 1e-6}


def new_figure(ncols=1, width=6.0, height=4.5):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path):
    """Save atomically (temp + rename) and close."""
    import matplotlib.pyplot as plt
    try:
        with atomic_paths(path) as (temp,):
            fig.tight_layout()
            fig.savefig(temp, dpi=110, format='png')
    finally:
        plt.close(fig)
    return path


def plot_pareto(candidates, path, cost_keys=('flops', 'latency_ms'), title='search',
                boundaries=()):
    """Top-1 vs each cost: every evaluated candidate, the Pareto front, the best one and the
    constraint boundaries, ``(cost key, limit, name)`` as ``Constraints.checks`` gives them."""
    from .search import pareto_front, rank_key
    keys = [k for k in cost_keys if candidates and all(c.costs.get(k) is not None
                                                          for c in candidates)]
    fig, axes = new_figure(max(1, len(keys)))
    for ax, key in zip(axes, keys):
        scale = _COST_SCALE.get(key, 1.0)
        ax.scatter([c.costs[key] * scale for c in candidates],
                   [100 * c.top1 for c in candidates], s=12, alpha=0.5, label='evaluated')
        front = pareto_front(candidates, key)
        ax.step([c.costs[key] * scale for c in front], [100 * c.top1 for c in front],
                where='post', color='C3', label='Pareto front')
        best = min(candidates, key=rank_key)
        ax.scatter([best.costs[key] * scale], [100 * best.top1], marker='*', s=150,
                   color='C1', label='best')
        for index, (_, limit, name) in enumerate(b for b in boundaries if b[0] == key):
            ax.axvline(limit * scale, color='C%d' % (4 + index), linestyle='--',
                       label='limit: %s' % name)
        ax.set_xlabel(_COST_LABELS.get(key, key))
        ax.set_ylabel('top-1 (%)')
        ax.set_title('%s: top-1 vs %s' % (title, _COST_LABELS.get(key, key)))
        ax.grid(alpha=0.3)
        ax.legend(loc='lower right')
    return save_figure(fig, path)
