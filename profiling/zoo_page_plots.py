"""The zoo page's plots (PNG, matplotlib): accuracy against latency with the Pareto front, and
FLOPs against latency, one picture per runtime at batch 1."""
from nas.plots import new_figure, save_figure

__all__ = ['pareto_names', 'plot_top1_vs_latency', 'plot_flops_vs_latency']

_COLORS = {'builtin': 'C0', 'user': 'C2', 'gluoncv': 'C1'}
_LABEL_OFFSETS = ((5, 3), (5, -10))


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
    # neighbours in latency take turns labelling above and below
    placed = sorted(zip(rows, xs, ys), key=lambda point: point[2])
    for index, (row, x, y) in enumerate(placed):
        dx, dy = _LABEL_OFFSETS[index % len(_LABEL_OFFSETS)]
        axis.annotate(row['name'], (x, y), textcoords='offset points', xytext=(dx, dy),
                      fontsize=8)


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
    """Batch-1 latency against MACs (log-log) with the line of the median ms per GMAC: models
    above it run slower than their FLOPs suggest, below it faster. False without two points."""
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
    low, high = min(xs) / 1.3, max(xs) * 1.3
    axis.plot([low, high], [rate * low, rate * high], color='grey', linestyle=':',
              label='median %.1f ms per GMAC' % rate)
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    axis.set_xscale('log')
    axis.set_yscale('log')  # decades apart, and the proportional line stays a straight one
    for ticks in (axis.xaxis, axis.yaxis):
        ticks.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ticks.set_major_formatter(ScalarFormatter())
        ticks.set_minor_formatter(NullFormatter())
    axis.set_xlabel('GMACs per image')
    axis.set_ylabel('%s latency, batch 1 (ms)' % label)
    axis.set_title('FLOPs vs %s latency' % label, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='upper left')
    save_figure(fig, path)
    return True
