"""``nas-profile``: measured per-operator latency of a model, or a per-block latency table."""
import click
from tqdm import tqdm

from cli.common import (BATCH, COUNT, INPUT_SIZE, OFF_OR_COUNT, RUNS, THREADS, Command,
                        weights_options)
from nas.errors import ProfilingError
from nas.space import SearchSpace, LAYOUTS
from zoo import load_model
from profiling.deploy import PRECISIONS
from profiling.latency_table import measure_latency_table, missing_entries, table_entries
from profiling.op_by_op import profile_op_by_op
from profiling.plots import plot_block_times

_NAME_WIDTH = 52


def _int_list(text):
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise ProfilingError('expected comma-separated integers, got %r' % text) from None


@click.command(cls=Command)
@click.option('--op-by-op', 'model', metavar='MODEL', default=None,
              help='Profile MODEL (zoo name, architecture JSON or gluoncv name) op by op.')
@weights_options
@click.option('--latency-table', 'latency_table', is_flag=True,
              help='Measure the per-block latency table of the search space.')
@click.option('--runtime', default='onnxruntime', show_default=True,
              help='mxnet or onnxruntime.')
@click.option('--precision', type=click.Choice(PRECISIONS), default='fp32', show_default=True,
              help='Latency table: int8 times the graph nas-quantize writes (onnxruntime).')
@click.option('--chunks', type=COUNT, default=4, show_default=True,
              help='Latency table: interleaved rounds each entry is timed in.')
@click.option('--calibration', type=click.IntRange(0, 10), default=8, show_default=True,
              help='Latency table: whole subnets measured to fit the correction (0: none, '
                   'else 3..10).')
@click.option('--batch-size', type=BATCH, default=1, show_default=True)
@click.option('--input-size', type=INPUT_SIZE, default=224, show_default=True)
@click.option('--threads', type=THREADS, default=2, show_default=True, help='CPU threads.')
@click.option('--runs', type=RUNS, default=None,
              help='Timed runs after warm-up (default 50 op by op, 20 per table entry).')
@click.option('--warmup', type=OFF_OR_COUNT, default=None,
              help='Untimed runs first (default 10 / 5).')
@click.option('--json', 'json_path', default=None, help='Op by op: write the profile as JSON.')
@click.option('--csv', 'csv_path', default=None, help='Op by op: write one CSV line per op.')
@click.option('--plot', 'plot_path', default=None,
              help='Op by op: PNG of time per block, stacked by op type.')
@click.option('-o', '--output', default=None, help='Latency table: the JSON file to write.')
@click.option('--resume', is_flag=True, help='Latency table: complete the table at -o.')
@click.option('--se/--no-se', 'use_se', default=True, show_default=True,
              help='Latency table: SE variant of the search space.')
@click.option('--last-conv-after-pooling/--no-last-conv-after-pooling', default=True,
              show_default=True, help='Latency table: efficient last conv.')
@click.option('--layout', default='OneShot', show_default=True,
              help='Latency table: channel layout (%s).' % ', '.join(LAYOUTS))
@click.option('--classes', type=click.IntRange(1, 100000), default=None,
              help='Classifier width (default 1000).')
@click.option('--positions', default=None, help='Latency table: only these positions, e.g. 0,19.')
@click.option('--blocks', default=None, help='Latency table: only these block choices.')
@click.option('--channels', default=None, help='Latency table: only these channel choices.')
@click.option('--quiet', is_flag=True, help='No progress bar.')
def main(model, latency_table, runtime, precision, chunks, calibration, batch_size, input_size,
         threads, runs, warmup, json_path, csv_path, plot_path, output, resume, use_se,
         last_conv_after_pooling, layout, classes, positions, blocks, channels, quiet, weights):
    """Measure where inference time goes (--op-by-op MODEL) or build a latency table
    (--latency-table -o table.json) that predicts a subnet's latency as a sum of blocks."""
    if (model is None) == (not latency_table):
        raise ProfilingError('choose exactly one of --op-by-op MODEL and --latency-table')
    if latency_table:
        if weights:
            raise ProfilingError('--params / --pretrained are for --op-by-op MODEL')
        if not output:
            raise ProfilingError('--latency-table needs -o FILE for the table')
        space = SearchSpace(use_se=use_se, last_conv_after_pooling=last_conv_after_pooling,
                            layout=layout, input_size=input_size, classes=classes or 1000)
        entries = table_entries(_int_list(positions), _int_list(blocks), _int_list(channels))
        with tqdm(desc='latency table', unit='entry', disable=quiet) as bar:  # with its ETA
            table = measure_latency_table(
                space, runtime=runtime, precision=precision, threads=threads,
                batch_size=batch_size, runs=20 if runs is None else runs,
                warmup=5 if warmup is None else warmup, chunks=chunks, entries=entries,
                calibration=calibration, path=output, resume=resume, progress=bar)
        _print_table_summary(table, output)
        return
    net = load_model(model, weights, classes=classes, input_size=input_size).net
    runs = 50 if runs is None else runs
    with tqdm(total=2 * runs, desc='profiling %s' % runtime, unit='run', disable=quiet) as bar:
        profile = profile_op_by_op(net, input_size=input_size, batch_size=batch_size,
                                   runtime=runtime, threads=threads, runs=runs,
                                   warmup=10 if warmup is None else warmup, progress=bar,
                                   model_name=model)
    _print_profile(profile)
    for path, write in ((json_path, profile.write_json), (csv_path, profile.write_csv),
                        (plot_path, lambda p: plot_block_times(profile, p))):
        if path:
            write(path)
            click.echo('wrote %s' % path)


def _print_profile(profile):
    click.echo('%-*s %-16s %-9s %-16s %9s %9s %6s %8s' % (
        _NAME_WIDTH, 'operator', 'type', 'block', 'output', 'MFLOPs', 'ms', 'share', 'GFLOP/s'))
    for row in profile.rows:
        name = row.name if len(row.name) <= _NAME_WIDTH else '...' + row.name[-_NAME_WIDTH + 3:]
        click.echo('%-*s %-16s %-9s %-16s %9.3f %9.4f %5.1f%% %8.2f' % (
            _NAME_WIDTH, name, row.op_type[:16], row.block, 'x'.join(map(str, row.out_shape)),
            row.flops / 1e6, row.time_ms, 100 * row.share, row.gflops))
    total = profile.op_sum_ms or 1.0
    stages = {row.block: row.stage for row in profile.rows}
    click.echo('\nper block:')
    for block, ms in profile.block_totals().items():
        stage = ' (stage %d)' % stages[block] if stages.get(block) else ''
        click.echo('  %-22s %9.4f ms %5.1f%%' % (block + stage, ms, 100 * ms / total))
    click.echo('per op type:')
    for op_type, ms in profile.type_totals().items():
        click.echo('  %-22s %9.4f ms %5.1f%%' % (op_type, ms, 100 * ms / total))
    click.echo('\n%s on %s %s, %d thread(s), input %s, CPU %s' % (
        profile.model, profile.runtime, profile.runtime_version, profile.threads,
        'x'.join(map(str, profile.input_shape)), profile.cpu))
    click.echo('end-to-end median %.3f ms, mean %.3f ms (%d runs; %.3f ms with the profiler '
               'on); per-op medians sum to %.3f ms, per-op means to %.3f ms = %.1f%% of the mean'
               % (profile.latency.median_ms, profile.latency.mean_ms, profile.latency.runs,
                  profile.profiled.median_ms, profile.op_sum_ms, profile.op_mean_sum_ms,
                  100 * profile.coverage))


def _print_table_summary(table, path):
    config, latency = table['config'], table['latency_ms']
    left = len(missing_entries(table))
    probe, correction = config['probe'], table['correction']
    click.echo('latency table %s: %s %s %s, %d thread(s), batch %d, input %d, CPU %s' % (
        path, config['runtime'], config['runtime_version'], config['precision'],
        config['threads'], config['batch_size'], config['input_size'], config['cpu']))
    click.echo('stem %.4f ms, head %.4f ms, %d of %d block entries measured (median of %d '
               'runs)%s' % (latency['input_block'], latency['output_block'],
                            len(table_entries()) - left, len(table_entries()), config['runs'],
                            '' if not left else '; complete it with --resume'))
    click.echo('probe %.4f ms (spread %.1f %% over the build); correction: %s; built in %.0f s'
               % (probe['median_ms'], 100 * probe['spread'], 'none' if not correction else
                  '%s (slope %.3f, intercept %.3f units; leave-one-out error %.1f %%)' % (
                      correction['model'], correction['slope'], correction['intercept'],
                      100 * correction['loo_error'][correction['model']]),
                  config['build_seconds']))
