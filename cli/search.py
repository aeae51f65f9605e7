"""``nas-search``: search a trained supernet under FLOPs/params/latency/MicroNet limits."""
import json
import os

import click

from cli.common import handle_errors, parse_amount
from nas.errors import SearchError
from nas.search import Constraints, SearchConfig

def _latency_callables(table_path, runtime, space):
    """The latency predictor of a table, and the table's floor (cheapest entry everywhere)."""
    from profiling.latency_table import load_latency_table, predict_latency
    from profiling.timing import check_runtime
    check_runtime(runtime)
    table = load_latency_table(table_path, runtime=runtime, space=space)
    latency = table['latency_ms']
    floor = latency['input_block'] + latency['output_block'] + sum(
        min(v for row in position for v in row if v is not None)
        for position in latency['nas_block'])
    return (lambda arch: predict_latency(table, arch)), floor


def _micronet_callable(space, bits):
    from profiling.scores import micronet_score
    from nas.network import OneShotNet
    shape = (1, 3, space.input_size, space.input_size)
    return lambda arch: micronet_score(OneShotNet(arch), shape, bits=bits).score


@click.command()
@click.argument('run_dir', type=click.Path())
@click.option('--strategy', type=click.Choice(['random', 'genetic']), default='genetic')
@click.option('--space', 'space_mode', type=click.Choice(['block', 'channel', 'joint']),
              default='joint', help='Genes searched; the others stay frozen.')
@click.option('--max-flops', help='e.g. 300M')
@click.option('--max-params', help='e.g. 3.5M')
@click.option('--max-latency-ms', type=float, help='Needs --latency-table.')
@click.option('--latency-table', type=click.Path(), help='From nas-profile --latency-table.')
@click.option('--runtime', default='onnxruntime', help='Runtime the latency table must be for.')
@click.option('--max-micronet', type=float, help='Upper limit of the MicroNet score.')
@click.option('--micronet-bits', type=click.Choice(['32', '16', '8']), default='16')
@click.option('--population', type=int, default=50, show_default=True)
@click.option('--generations', type=int, default=20, show_default=True)
@click.option('--elite', type=int, default=10, show_default=True)
@click.option('--iterations', type=int, default=100, show_default=True,
              help='Candidates evaluated by random search.')
@click.option('--mutation-prob', type=float, default=0.1, show_default=True)
@click.option('--top-k', type=int, default=3, show_default=True)
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--data', default='digits', show_default=True,
              help="'digits' or an image folder / .rec file.")
@click.option('--batch-size', type=int, default=64, show_default=True)
@click.option('--recalib-batches', type=int, default=8, show_default=True,
              help='Training batches for BN recalibration; 0 switches it off.')
@click.option('--val-batches', type=int, default=None, help='Default: the whole val split.')
@click.option('--fixed-arch', help='BLOCKS:CHANNELS supplying the frozen genes.')
@click.option('--register', 'register_name', help='Put the winner into the user zoo as NAME.')
@click.option('--root', default=None, help='Model store / user zoo root.')
@click.option('-o', '--out', 'out_dir', required=True, type=click.Path())
@click.option('--resume', is_flag=True, help='Continue the search in OUT.')
@handle_errors
def main(run_dir, strategy, space_mode, max_flops, max_params, max_latency_ms, latency_table,
         runtime, max_micronet, micronet_bits, population, generations, elite, iterations,
         mutation_prob, top_k, seed, data, batch_size, recalib_batches, val_batches, fixed_arch,
         register_name, root, out_dir, resume):
    """Search the supernet trained in RUN_DIR; writes candidates, top-k and Pareto plots to OUT."""
    from tqdm import tqdm
    from nas.search_run import load_supernet_space, search_supernet
    from nas.space import Arch
    space = load_supernet_space(run_dir)
    constraints = Constraints(parse_amount(max_flops, 'FLOPs'),
                              parse_amount(max_params, 'params'), max_latency_ms, max_micronet)
    latency = latency_floor = None
    if max_latency_ms is not None and not latency_table:
        raise SearchError('--max-latency-ms needs --latency-table (nas-profile --latency-table)')
    if latency_table:
        latency, latency_floor = _latency_callables(latency_table, runtime, space)
    micronet = _micronet_callable(space, int(micronet_bits)) if max_micronet else None
    fixed = Arch.parse(fixed_arch, space) if fixed_arch else None
    config = SearchConfig(strategy=strategy, space=space_mode, population=population,
                          generations=generations, elite=elite, random_iters=iterations,
                          mutation_prob=mutation_prob, top_k=top_k, seed=seed,
                          fixed_blocks=fixed.blocks if fixed else None,
                          fixed_channels=fixed.channels if fixed else None)
    bars = []

    def start_bar(total):
        bars.append(tqdm(total=total, desc='%s search' % strategy,
                         unit='cand' if strategy == 'random' else 'gen'))
        return bars[0].update
    try:
        top, summary = search_supernet(
            run_dir, out_dir, config, constraints, data=data, batch_size=batch_size,
            recalib_batches=recalib_batches, val_batches=val_batches, latency=latency,
            latency_floor=latency_floor, micronet=micronet, resume=resume, progress=start_bar)
    finally:
        for bar in bars:
            bar.close()
    click.echo('evaluated %d candidates in %.1f s; results in %s'
               % (summary['evaluated'], summary['seconds'], out_dir))
    click.echo('%-4s %-42s %7s %10s %9s %s' % ('rank', 'arch', 'top-1', 'FLOPs', 'params',
                                               'latency'))
    for rank, cand in enumerate(top, 1):
        latency_ms = cand.costs.get('latency_ms')
        click.echo('%-4d %-42s %6.2f%% %9.2fM %8.3fM %s' % (
            rank, cand.arch, 100 * cand.top1, cand.costs['flops'] / 1e6,
            cand.costs['params'] / 1e6, '%.3f ms' % latency_ms if latency_ms else '-'))
    if register_name:
        from zoo.registry import register_model
        winner = top[0]
        path = register_model(register_name, Arch.parse(winner.arch, space), root=root,
                              description='searched (%s, seed %d)' % (strategy, seed),
                              extra={'search': {'supernet_top1': winner.top1,
                                                'costs': winner.costs,
                                                'run_dir': os.path.abspath(run_dir)}})
        click.echo('registered %s -> %s (train it with: nas-train subnet --arch %s)'
                   % (register_name, path, register_name))
    click.echo(json.dumps(summary))
