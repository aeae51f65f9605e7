"""``nas-search``: search a trained supernet under FLOPs/params/latency/MicroNet limits."""
import dataclasses
import json
import os

import click

from cli.common import (AMOUNT, BATCH, COUNT, OFF_OR_COUNT, POSITIVE, PROBABILITY, SEED, Command,
                        root_option)
from nas.errors import SearchError
from nas.constraints import Constraints
from nas.normalized import REFERENCE_MODELS
from nas.search import FITNESS, SearchConfig

def _latency_callables(table_path, runtime, space):
    """The table's predictor, rescaled by a fresh probe time, and the fastest subnet's time."""
    from profiling.verify import latency_predictor
    predictor = latency_predictor(table_path, runtime, space)
    return predictor, predictor.floor(space)


def _micronet_callable(space, bits):
    from profiling.scores import micronet_score
    from nas.network import OneShotNet
    shape = (1, 3, space.input_size, space.input_size)
    return lambda arch: micronet_score(OneShotNet(arch), shape, bits=bits).score


@click.command(cls=Command)
@click.argument('run_dir', type=click.Path())
@click.option('--strategy', type=click.Choice(['random', 'genetic']), default='genetic')
@click.option('--space', 'space_mode', type=click.Choice(['block', 'channel', 'joint']),
              default='joint', help='Genes searched; the others stay frozen.')
@click.option('--max-flops', type=AMOUNT, help='e.g. 300M')
@click.option('--max-params', type=AMOUNT, help='e.g. 3.5M')
@click.option('--max-latency-ms', type=POSITIVE, help='Needs --latency-table.')
@click.option('--latency-table', type=click.Path(), help='From nas-profile --latency-table.')
@click.option('--runtime', default='onnxruntime', help='Runtime the latency table must be for.')
@click.option('--verify-latency/--no-verify-latency', default=True, show_default=True,
              help='With --latency-table: export and time the top-k winners afterwards.')
@click.option('--max-micronet', type=POSITIVE, help='Upper limit of the MicroNet score.')
@click.option('--micronet-bits', type=click.Choice(['32', '16', '8']), default='16')
@click.option('--reference', type=click.Choice(list(REFERENCE_MODELS)), default=None,
              help='Comparison model of the normalised-score rule (SPEC §5): a candidate is '
                   'legal iff combined = 0.5 F/F_ref + 0.5 P/P_ref <= --max-combined. '
                   '[default: none; combined is still recorded against SinglePathOneShot]')
@click.option('--max-combined', type=POSITIVE, default=None,
              help='Upper limit of combined [default: 1 when --reference is given].')
@click.option('--max-flop-ratio', type=POSITIVE, default=None,
              help="Upper limit of F/F_ref [default: none; the reference's flop_max is 1].")
@click.option('--max-param-ratio', type=POSITIVE, default=None, help='Upper limit of P/P_ref.')
@click.option('--fitness', type=click.Choice(FITNESS), default='acc', show_default=True,
              help='What the search maximises: top-1, or top-1 (fraction) - r * combined.')
@click.option('--balance-r', type=POSITIVE, default=1.0, show_default=True,
              help='r of balanced_flop_acc.')
@click.option('--count-illegal/--no-count-illegal', default=True, show_default=True,
              help='Random search: an illegal draw uses up an iteration, as in the reference; '
                   'off: draw until each iteration finds a legal candidate.')
@click.option('--population', type=COUNT, default=50, show_default=True)
@click.option('--generations', type=COUNT, default=20, show_default=True)
@click.option('--elite', type=COUNT, default=None,
              help='Best candidates kept each generation [default: min(10, population)].')
@click.option('--iterations', type=COUNT, default=100, show_default=True,
              help='Random-search iterations (each draws one candidate; see --count-illegal).')
@click.option('--mutation-prob', type=PROBABILITY, default=0.1, show_default=True)
@click.option('--top-k', type=COUNT, default=3, show_default=True)
@click.option('--seed', type=SEED, default=0, show_default=True)
@click.option('--data', default='digits', show_default=True,
              help="'digits' or an image folder / .rec file.")
@click.option('--batch-size', type=BATCH, default=64, show_default=True)
@click.option('--recalib-batches', type=OFF_OR_COUNT, default=8, show_default=True,
              help='Training batches for BN recalibration; 0 switches it off.')
@click.option('--val-batches', type=COUNT, default=None, help='Default: the whole val split.')
@click.option('--fixed-arch', help='BLOCKS:CHANNELS supplying the frozen genes.')
@click.option('--register', 'register_name', help='Put the winner into the user zoo as NAME.')
@root_option
@click.option('-o', '--out', 'out_dir', required=True, type=click.Path())
@click.option('--resume', is_flag=True, help='Continue the search in OUT.')
def main(run_dir, strategy, space_mode, max_flops, max_params, max_latency_ms, latency_table,
         runtime, max_micronet, micronet_bits, reference, max_combined, max_flop_ratio,
         max_param_ratio, fitness, balance_r, count_illegal, population, generations, elite,
         iterations, mutation_prob, top_k, seed, data, batch_size, recalib_batches, val_batches,
         fixed_arch, register_name, root, out_dir, resume, verify_latency):
    """Search the supernet trained in RUN_DIR; writes candidates, top-k and Pareto plots to OUT."""
    from tqdm import tqdm
    from nas.search_run import load_supernet_space, search_supernet
    from nas.space import Arch
    space = load_supernet_space(run_dir)
    constraints = Constraints(max_flops, max_params, max_latency_ms, max_micronet,
                              reference=reference, max_combined=max_combined,
                              max_flop_ratio=max_flop_ratio, max_param_ratio=max_param_ratio)
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
                          count_illegal=count_illegal, fitness=fitness, balance_r=balance_r,
                          fixed_blocks=fixed.blocks if fixed else None,
                          fixed_channels=fixed.channels if fixed else None)
    bars = []

    def start_bar(total):
        def update(count):  # the bar opens at the first step: an earlier error stays one line
            if not bars:
                bars.append(tqdm(total=total, desc='%s search' % strategy,
                                 unit='cand' if strategy == 'random' else 'gen'))
            bars[0].update(count)
        return update
    try:
        top, summary = search_supernet(
            run_dir, out_dir, config, constraints, data=data, batch_size=batch_size,
            recalib_batches=recalib_batches, val_batches=val_batches, latency=latency,
            latency_floor=latency_floor, micronet=micronet, resume=resume, progress=start_bar)
    finally:
        for bar in bars:
            bar.close()
    click.echo('evaluated %d candidates in %.1f s (%d illegal draws skipped); results in %s'
               % (summary['evaluated'], summary['seconds'], summary['illegal_draws'], out_dir))
    click.echo('rule: %s; fitness: %s' % (summary['rule'], fitness))
    click.echo('%-4s %-42s %7s %10s %9s %8s %s' % ('rank', 'arch', 'top-1', 'FLOPs', 'params',
                                                   'combined', 'latency'))
    for rank, cand in enumerate(top, 1):
        latency_ms = cand.costs.get('latency_ms')
        click.echo('%-4d %-42s %6.2f%% %9.2fM %8.3fM %8.4f %s' % (
            rank, cand.arch, 100 * cand.top1, cand.costs['flops'] / 1e6,
            cand.costs['params'] / 1e6, cand.costs['combined'],
            '%.3f ms' % latency_ms if latency_ms else '-'))
    winner = dataclasses.asdict(top[0])
    if latency and verify_latency:
        from profiling.verify import card_latency, verify_winners
        verified = verify_winners(out_dir, space, latency, max_latency_ms)
        winner = verified[0]
        if winner['latency']['ranked_probe_ms'] != latency.probe_ms:
            click.echo('the probe read %.3f ms at the search, %.3f ms while the winners were '
                       'measured: the candidates were ranked again at that speed'
                       % (latency.probe_ms, winner['latency']['ranked_probe_ms']))
        for rank, entry in enumerate(verified, 1):
            record = entry['latency']
            click.echo('winner %d: %s measured %.3f ms (min %.3f, spread %.1f %%), predicted '
                       '%.3f ms%s' % (rank, entry['arch'], record['median_ms'], record['min_ms'],
                                      100 * record['spread'], record['predicted_ms'],
                                      ' -- OVER THE LIMIT' if record['over_limit'] else ''))
    if register_name:
        from zoo.registry import register_model
        path = register_model(register_name, Arch.parse(winner['arch'], space), root=root,
                              description='searched (%s, seed %d)' % (strategy, seed),
                              extra={'search': {'supernet_top1': winner['top1'],
                                                'costs': winner['costs'],
                                                'run_dir': os.path.abspath(run_dir),
                                                'search_dir': os.path.abspath(out_dir)},
                                     **({'latency': card_latency(winner['latency'])}
                                        if 'latency' in winner else {})})
        click.echo('registered %s -> %s (train it with: nas-train subnet --arch %s)'
                   % (register_name, path, register_name))
    click.echo(json.dumps(summary))
