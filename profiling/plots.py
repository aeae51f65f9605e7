"""The op-by-op profile as a picture: time per block, stacked by operator type."""
from nas.plots import new_figure, save_figure

__all__ = ['plot_block_times']


def plot_block_times(profile, path, top_types=8):
    """Write a PNG bar chart of ``profile`` (an OpProfile): one bar per block in execution
    order, one colour per op type (the ``top_types`` slowest types; the rest as 'other')."""
    per_block = profile.block_type_totals()
    ranked = list(profile.type_totals())
    shown = ranked[:top_types]
    stacks = shown + (['other'] if len(ranked) > top_types else [])
    blocks = list(per_block)
    fig, (axis,) = new_figure(width=max(8.0, 0.45 * len(blocks) + 2.5), height=5.0)
    bottoms = [0.0] * len(blocks)
    for op_type in stacks:
        heights = [sum(ms for name, ms in per_block[block].items()
                       if name == op_type or (op_type == 'other' and name not in shown))
                   for block in blocks]
        # matplotlib leaves labels starting with '_' out of the legend (MXNet's _sg_mkldnn_conv)
        axis.bar(range(len(blocks)), heights, bottom=bottoms, label=op_type.lstrip('_'),
                 width=0.8)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    axis.set_xticks(range(len(blocks)))
    axis.set_xticklabels(blocks, rotation=60, ha='right', fontsize=8)
    axis.set_xlim(-0.6, len(blocks) - 0.4)
    axis.set_ylabel('median time per inference (ms)')
    axis.set_title('%s on %s, %d thread(s), input %s: %.2f ms end-to-end, ops sum %.2f ms'
                   % (profile.model, profile.runtime, profile.threads,
                      'x'.join(map(str, profile.input_shape)), profile.latency.median_ms,
                      profile.op_sum_ms), fontsize=9)
    axis.legend(fontsize=8, ncol=2, title='operator type', title_fontsize=8)
    axis.grid(axis='y', alpha=0.3)
    return save_figure(fig, path)
