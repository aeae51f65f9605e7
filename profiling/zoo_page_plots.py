"""The zoo page's plots (PNG, matplotlib): accuracy against latency with the Pareto front, and
FLOPs against latency, one picture per runtime at batch 1."""
from nas.plots import new_figure, save_figure

__all__ = ['pareto_names', 'plot_top1_vs_latency', 'plot_flops_vs_latency']

_COLORS = {'builtin': 'C0', 'user': 'C2', 'gluoncv': 'C1'}


def pareto_names(points):
    """Names of the (name, latency, top1) points no other point beats on both: faster and at
    least as accurate, or as fast and more accurate."""
    front, best = [], -float('inf')
    for name, _, top1 in sorted(points, key=lambda p: (p[1], -p[2])):
        if top1 > best:
            front.append(name)
            best = top1
    return front


def _scatter(axis, rows, xs, ys):
    for source in ('builtin', 'user', 'gluoncv'):
        picked = [(row, x, y) for row, x, y in zip(rows, xs, ys) if row['source'] == source]
        if picked:
            axis.scatter([x for _, x, _ in picked], [y for *_, y in picked], s=36,
                         color=_COLORS[source], label=source, zorder=3)
    for row, x, y in zip(rows, xs, ys):
        axis.annotate(row['name'], (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)


def plot_top1_vs_latency(rows, runtime, label, path):
    """Published ImageNet top-1 against batch-1 latency on ``runtime``, the Pareto front drawn;
    returns the names on the front (None, and no file, without two points to compare)."""
    rows = [row for row in rows if row['published_top1'] is not None
            and row['latency'].get(runtime, {}).get('b1') is not None]
    if len(rows) < 2:
        return None
    xs = [row['latency'][runtime]['b1'] for row in rows]
    ys = [row['published_top1'] for row in rows]
    front = pareto_names([(row['name'], x, y) for row, x, y in zip(rows, xs, ys)])
    fig, (axis,) = new_figure(width=6.0, height=4.2)
    _scatter(axis, rows, xs, ys)
    on_front = sorted((x, y) for row, x, y in zip(rows, xs, ys) if row['name'] in front)
    axis.step([x for x, _ in on_front], [y for _, y in on_front], where='post', color='C3',
              linestyle='--', label='Pareto front', zorder=2)
    axis.scatter([x for x, _ in on_front], [y for _, y in on_front], s=140, facecolors='none',
                 edgecolors='C3', zorder=4)
    axis.set_xlabel('%s latency, batch 1 (ms, measured)' % label)
    axis.set_ylabel('ImageNet top-1 (%, published)')
    axis.set_title('Published top-1 vs %s latency' % label, fontsize=10)
    axis.grid(alpha=0.3)
    axis.margins(x=0.15, y=0.08)
    axis.legend(fontsize=8, loc='best')
    save_figure(fig, path)
    return front


def plot_flops_vs_latency(rows, runtime, label, path):
    """Batch-1 latency against MACs with the line of the median ms per GMAC: models above it
    run slower than their FLOPs suggest, below it faster. False without two points."""
    rows = [row for row in rows if row['flops'] and
            row['latency'].get(runtime, {}).get('b1') is not None]
    if len(rows) < 2:
        return False
    xs = [row['flops'] / 1e9 for row in rows]
    ys = [row['latency'][runtime]['b1'] for row in rows]
    rates = sorted(y / x for x, y in zip(xs, ys))
    rate = rates[len(rates) // 2]
    fig, (axis,) = new_figure(width=6.0, height=4.2)
    _scatter(axis, rows, xs, ys)
    top = max(xs) * 1.1
    axis.plot([0, top], [0, rate * top], color='grey', linestyle=':',
              label='median %.1f ms per GMAC' % rate)
    axis.set_xlim(0, top)
    axis.set_ylim(0, max(max(ys), rate * top) * 1.1)
    axis.set_xlabel('GMACs per image')
    axis.set_ylabel('%s latency, batch 1 (ms)' % label)
    axis.set_title('FLOPs vs %s latency' % label, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='upper left')
    save_figure(fig, path)
    return True
