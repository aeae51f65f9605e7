"""Latency-limited search end to end (issue #15): do the winners of a search under a latency
limit really run under it once deployed?

For each space -- ``digits32``: OneShot SE+ at 32 px with a supernet trained briefly on the
embedded digits (as the demo trains it), and ``random224``: the same space at 224 px with
random weights (speed does not depend on weight values) -- this bench

1. measures a latency table (onnxruntime FP32, batch 1, 2 threads) restricted to what a
   channel search over OneShot-S+'s blocks can draw (20 positions x 10 widths), with its
   correction fitted on ``--calibration`` whole subnets;
2. loads it as ``nas-search --latency-table`` does (``profiling.verify.latency_predictor``:
   fresh probe) and sets the limit at the ``--percentile``-th percentile of the predictions of
   ``--draws`` random subnets of the searched space (rescaled by that same probe: a probe timed
   during a load spike scales the limit and the search's predictions alike, where a user's
   fixed limit in ms would not; the results hold the build's and the search's probe times);
3. runs the library search the command runs (``nas.search_run.search_supernet``, genetic,
   channel mode) under ``Constraints(max_latency_ms=limit)``;
4. verifies the top-k winners as ``--verify-latency`` does (``profiling.verify.verify_winners``:
   each exported and timed, interleaved with the probe; when one is over the limit and the
   probe read slower than at the search, timed again after a pause, then ranked again at the
   machine's speed if it is still slow), and the same for
   the ``--near`` legal candidates closest to the limit (a random-weight search ranks winners
   by chance, so those are the harder test; they are never ranked again);
5. times the first ``--repeat`` winners a second time: the noise floor.

Each verified subnet's record holds the prediction the search used (rescaled by the probe
timed at search time, corrected), the same without the correction, and the prediction
rescaled by the probe timed between the subnet's own chunks (what the table says for the
machine as it was during the measurement), beside the measured median, min and spread.

A subnet counts as under the limit within the noise floor when its measured median is at most
limit x (1 + noise floor); the share under the *drifted* limit also scales the limit by the
probe time during the subnet's measurement over the probe time at search time (a shared machine
that got slower in between slows everything; this separates that from predictor error). Writes ``--out`` (default bench/results_latency_search.json). It
never asserts.

    python bench/bench_latency_search.py [--spaces digits32 random224] [--quick] [--tables DIR]
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from nas.atomic import read_json, save_params, write_json, write_text  # noqa: E402
from nas.constraints import Constraints  # noqa: E402
from nas.data import open_dataset  # noqa: E402
from nas.errors import ProfilingError  # noqa: E402
from nas.network import OneShotNet  # noqa: E402
from nas.sampler import UniformSampler  # noqa: E402
from nas.search import SearchConfig  # noqa: E402
from nas.search_run import search_supernet  # noqa: E402
from nas.space import Arch, SearchSpace, NUM_POSITIONS, NUM_SCALES  # noqa: E402
from nas.train import TrainConfig, train_supernet  # noqa: E402
from profiling.deploy import measure_deployed, subnets  # noqa: E402
from profiling.latency_table import measure_latency_table, predict_latency  # noqa: E402
from profiling.timing import cpu_model  # noqa: E402
from profiling.verify import latency_predictor, verify_winners  # noqa: E402
from zoo.registry import get_card  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKS = get_card('oneshot_s_plus').arch.blocks  # the channel search's frozen blocks
# digits32 trains its supernet; random224 keeps random weights, so the accuracy that ranks its
# candidates is chance and one small batch without BN recalibration is all it evaluates
SPACES = {'digits32': dict(input_size=32, batch_size=32, recalib_batches=2, val_batches=2),
          'random224': dict(input_size=224, batch_size=8, recalib_batches=0, val_batches=1)}
RUNTIME = 'onnxruntime'
DRAW_SEED = 3  # the random subnets that set the limit (the table calibrates on other ones)


def score(rows, limit_ms, noise, search_probe_ms):
    """How measured subnets stand against the limit: shares strictly under it, under it within
    the noise floor (median <= limit x (1 + noise)), not flagged by the verification, and under
    the limit scaled to the machine's speed during the measurement (limit x probe then / probe at
    search time, within the noise: what the search promised when the machine has drifted since);
    the worst and mean measured / limit; predicted / measured (> 1: the table overestimates),
    with the search's prediction and with the one rescaled at measurement time."""
    measured = np.array([r['median_ms'] for r in rows], dtype=float)
    drift = np.array([r['probe_ms'] for r in rows], dtype=float) / search_probe_ms

    def ratio(key):
        values = np.array([r[key] for r in rows], dtype=float) / measured
        return {'mean': float(values.mean()), 'min': float(values.min()),
                'max': float(values.max())}
    return {'count': len(rows),
            'under_limit': float(np.mean(measured <= limit_ms)),
            'under_limit_within_noise': float(np.mean(measured <= limit_ms * (1 + noise))),
            'not_flagged': float(np.mean([not r['over_limit'] for r in rows])),
            'under_drifted_limit_within_noise': float(np.mean(
                measured <= limit_ms * drift * (1 + noise))),
            'worst_measured_over_limit': float(measured.max() / limit_ms),
            'mean_measured_over_limit': float(measured.mean() / limit_ms),
            'predicted_over_measured': ratio('predicted_ms'),
            'rescaled_at_measurement_over_measured': ratio('predicted_at_measurement_ms')}


def channel_archs(space, count, seed):
    """``count`` random subnets of the channel search: OneShot-S+'s blocks, random widths."""
    rng = np.random.RandomState(seed)
    return [Arch(BLOCKS, tuple(rng.randint(0, NUM_SCALES, NUM_POSITIONS)), space)
            for _ in range(count)]


def trained_supernet(space, run_dir, args):
    """The demo's supernet recipe on the digits, for ``args.epochs`` epochs."""
    sampler = UniformSampler(space, mode='channel', seed=0, fixed_blocks=BLOCKS)
    config = TrainConfig(epochs=args.epochs, batch_size=32, lr=0.05, wd=4e-5, warmup_epochs=0.5,
                         recal_images=64)
    return train_supernet(space, open_dataset('digits', 'train', space.input_size),
                          open_dataset('digits', 'val', space.input_size), run_dir, config,
                          sampler=sampler).val_top1


def random_supernet(space, run_dir):
    """A run directory as nas-train supernet writes it, holding a randomly initialised
    supernet (one pass through all four blocks gives every parameter its shape)."""
    net = OneShotNet(space=space)
    net.initialize()
    net.use_all_blocks = True
    net(mx.nd.zeros((1, 3, space.input_size, space.input_size)), BLOCKS)
    os.makedirs(run_dir, exist_ok=True)
    save_params(net, os.path.join(run_dir, 'supernet.params'))
    write_text(os.path.join(run_dir, 'space.json'), json.dumps(dataclasses.asdict(space)))


def verified(folder, space, predictor, limit_ms, args):
    """``verify_winners`` on ``folder/topk.json``, as nas-search --verify-latency runs it; the
    winners as written back to topk.json: [(Arch, latency record)]."""
    verify_winners(folder, space, predictor, limit_ms, **args.timing)
    return [(Arch.parse(w['arch'], space), w['latency'])
            for w in _read(os.path.join(folder, 'topk.json'))]


def near_limit(out_dir, folder, count):
    """A topk.json in ``folder`` of the ``count`` evaluated candidates that are not winners and
    are predicted closest to the limit (every evaluated candidate is legal); how many."""
    winners = {w['arch'] for w in _read(os.path.join(out_dir, 'topk.json'))}
    ranked = sorted(_read(os.path.join(out_dir, 'candidates.json')),
                    key=lambda c: -c['costs']['latency_ms'])
    os.makedirs(folder, exist_ok=True)
    near = [{'arch': c['arch']} for c in ranked if c['arch'] not in winners][:count]
    write_json(os.path.join(folder, 'topk.json'), near)
    return len(near)


def noise_floor(winners, args, size):
    """The first ``--repeat`` winners timed again: relative differences of the medians in ms
    and in probe units (the latter is free of the machine's drift in between)."""
    again = measure_deployed(subnets([arch for arch, _ in winners[:args.repeat]],
                                     (1, 3, size, size)),
                             RUNTIME, 'fp32', args.threads, probe_size=size, **args.timing)
    ms = [abs(m.timing.median_ms - r['median_ms']) / r['median_ms']
          for m, (_, r) in zip(again, winners)]
    units = [abs(m.units * r['probe_ms'] / r['median_ms'] - 1) for m, (_, r) in zip(again, winners)]
    return {'mean_abs': float(np.mean(ms)), 'max_abs': float(np.max(ms)), 'subnets': len(ms),
            'mean_abs_probe_units': float(np.mean(units))}


def rows(pairs, predictor):
    return [dict(arch=str(arch), predicted_ms=r['predicted_ms'],
                 predicted_uncorrected_ms=predict_latency(predictor.table, arch,
                                                          predictor.probe_ms, correct=False),
                 predicted_at_measurement_ms=predict_latency(predictor.table, arch, r['probe_ms']),
                 median_ms=r['median_ms'], min_ms=r['min_ms'], spread=r['spread'],
                 probe_ms=r['probe_ms'], ranked_probe_ms=r['ranked_probe_ms'],
                 over_limit=r['over_limit'])
            for arch, r in pairs]


def bench_space(name, args, work):
    setting = SPACES[name]
    size = setting['input_size']
    space = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=size, classes=10)
    folder = os.path.join(work, name)
    run_dir = os.path.join(folder, 'supernet')
    seconds = {}
    start = time.time()
    supernet_top1 = None
    if name == 'digits32':
        supernet_top1 = trained_supernet(space, run_dir, args)
    else:
        random_supernet(space, run_dir)
    seconds['supernet'] = time.time() - start

    start = time.time()
    table_path = os.path.join(args.tables or folder, 'latency_table_%s.json' % name)
    entries = [(p, BLOCKS[p], c) for p in range(NUM_POSITIONS) for c in range(NUM_SCALES)]
    measure_latency_table(space, runtime=RUNTIME, threads=args.threads, entries=entries,
                          calibration=args.calibration, path=table_path, resume=True,
                          **args.table_timing)
    seconds['table'] = time.time() - start
    predictor = latency_predictor(table_path, RUNTIME, space)  # as nas-search loads it
    drawn = [predictor(arch) for arch in channel_archs(space, args.draws, DRAW_SEED)]
    limit = float(np.percentile(drawn, args.percentile))

    start = time.time()
    out_dir = os.path.join(folder, 'search')
    config = SearchConfig(strategy='genetic', space='channel', population=args.population,
                          generations=args.generations, elite=max(2, args.population // 4),
                          top_k=args.top_k, seed=0, fixed_blocks=BLOCKS)
    _, summary = search_supernet(
        run_dir, out_dir, config, Constraints(max_latency_ms=limit), data='digits',
        batch_size=setting['batch_size'], recalib_batches=setting['recalib_batches'],
        val_batches=setting['val_batches'], latency=predictor,
        latency_floor=predictor.floor(space))
    seconds['search'] = time.time() - start

    start = time.time()
    winners = verified(out_dir, space, predictor, limit, args)
    near_dir = os.path.join(folder, 'near_limit')
    near = verified(near_dir, space, predictor, limit, args) \
        if near_limit(out_dir, near_dir, args.near) else []
    noise = noise_floor(winners, args, size)
    seconds['verify'] = time.time() - start
    correction = predictor.table.get('correction')
    ranked_at = winners[0][1]['ranked_probe_ms']  # the search's probe unless ranked again
    result = {
        'input_size': size, 'space': space.key(),
        'supernet': 'trained on digits, %d epochs (sampled-path top-1 %.3f)' % (
            args.epochs, supernet_top1) if name == 'digits32' else 'random weights',
        'table': {'entries': len(entries), 'calibration': args.calibration,
                  'correction': correction and {key: correction[key] for key in (
                      'model', 'slope', 'intercept', 'residuals', 'loo_error')},
                  'probe_ms_build': predictor.table['config']['probe']['median_ms'],
                  'probe_ms_search': predictor.probe_ms},
        'limit_ms': limit, 'limit_percentile': args.percentile,
        'random_subnets_predicted_ms': {'min': float(min(drawn)),
                                        'median': float(np.median(drawn)),
                                        'max': float(max(drawn)), 'count': len(drawn)},
        'search': {'evaluated': summary['evaluated'], 'best_top1': summary['best_top1'],
                   'ranked_again_at_probe_ms': ranked_at
                   if ranked_at != predictor.probe_ms else None},
        'noise_floor': noise,
        'winners': rows(winners, predictor),
        'near_limit': rows(near, predictor),
        'seconds': seconds,
    }
    for key in ('winners', 'near_limit'):
        result[key + '_score'] = score(result[key], limit, noise['mean_abs'],
                                       predictor.probe_ms) if result[key] else None
    print('%s: limit %.3f ms (p%.0f of %d random subnets), noise floor %.1f %%, probe %.3f ms '
          'at the search, winners ranked at %.3f ms'
          % (name, limit, args.percentile, len(drawn), 100 * noise['mean_abs'],
             predictor.probe_ms, ranked_at))
    for key in ('winners', 'near_limit'):
        found = result[key + '_score']
        if found:
            print('  %-10s %d: %3.0f %% under the limit within the noise floor (%.0f %% strictly, '
                  '%.0f %% at the drifted limit), worst measured/limit %.2f, predicted/measured '
                  '%.2f (rescaled at measurement %.2f)' % (
                      key, found['count'], 100 * found['under_limit_within_noise'],
                      100 * found['under_limit'], 100 * found['under_drifted_limit_within_noise'],
                      found['worst_measured_over_limit'], found['predicted_over_measured']['mean'],
                      found['rescaled_at_measurement_over_measured']['mean']), flush=True)
    return result


def _read(path):
    return read_json(path, ProfilingError, 'search result')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--spaces', nargs='+', default=list(SPACES), choices=list(SPACES))
    parser.add_argument('--epochs', type=int, default=2, help='digits32 supernet training')
    parser.add_argument('--calibration', type=int, default=6)
    parser.add_argument('--percentile', type=float, default=40.0)
    parser.add_argument('--draws', type=int, default=200)
    parser.add_argument('--population', type=int, default=12)
    parser.add_argument('--generations', type=int, default=3)
    parser.add_argument('--top-k', type=int, default=5)
    parser.add_argument('--near', type=int, default=5)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--table-runs', type=int, default=12,
                        help='per table entry (warmup 3, 3 chunks), as bench_latency_predictor')
    parser.add_argument('--runs', type=int, default=20,
                        help='per verified subnet (warmup 5, 4 chunks: --verify-latency)')
    parser.add_argument('--tables', default=None,
                        help='folder keeping the latency tables: a later run resumes them')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: digits32 only, 1 epoch, few runs and candidates')
    parser.add_argument('--out', default=os.path.join(HERE, 'results_latency_search.json'))
    args = parser.parse_args()
    if args.quick:
        args.spaces, args.epochs, args.calibration = ['digits32'], 1, 3
        args.population, args.generations, args.top_k, args.near, args.repeat = 4, 1, 2, 2, 2
        args.table_runs, args.runs = 4, 8
    args.table_timing = dict(runs=args.table_runs, warmup=min(3, args.table_runs),
                             chunks=min(3, args.table_runs))
    args.timing = dict(runs=args.runs, warmup=5, chunks=4)
    work = tempfile.mkdtemp(prefix='bench-latency-search-')
    if args.tables:
        os.makedirs(args.tables, exist_ok=True)
    start = time.time()
    results = {'config': dict({k: v for k, v in vars(args).items() if not k.endswith('timing')},
                              cpu=cpu_model(), runtime=RUNTIME, precision='fp32', batch_size=1,
                              load_average_before=os.getloadavg()), 'spaces': {}}
    for name in args.spaces:
        results['spaces'][name] = bench_space(name, args, work)
    results['config'].update(load_average_after=os.getloadavg(), seconds=time.time() - start)
    write_json(args.out, results, indent=2)
    print('wrote %s in %.0f s' % (args.out, results['config']['seconds']))


if __name__ == '__main__':
    main()
