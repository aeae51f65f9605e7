"""How well the latency table predicts measured latency, and how well per-op times add up.

For ``--samples`` seeded random subnets of the SE + last-conv-after-pooling space: predicted
latency (table sum) vs measured end-to-end latency, relative error per subnet, mean and max, once
from a table measured up front and once from entries re-measured next to each subnet.
Then the op-by-op profile of ``oneshot_plus`` on each runtime: summed per-op medians vs the
end-to-end median. Prints tables and writes ``--out`` (JSON). It never asserts.

    python bench/bench_latency_predictor.py --runtime onnxruntime --threads 1 --input-size 224
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from nas.network import OneShotNet
from nas.space import Arch, SearchSpace, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES
from profiling.latency_table import measure_latency, measure_latency_table, predict_latency
from profiling.op_by_op import profile_op_by_op
from profiling.timing import RUNTIMES, cpu_model
from zoo import load_model

HERE = os.path.dirname(os.path.abspath(__file__))


def random_archs(space, samples, seed):
    rng = np.random.RandomState(seed)
    return [Arch(tuple(rng.randint(0, NUM_BLOCKS, NUM_POSITIONS)),
                 tuple(rng.randint(0, NUM_SCALES, NUM_POSITIONS)), space)
            for _ in range(samples)]


def _measure(arch, args):
    net = OneShotNet(arch)
    net.initialize()
    return measure_latency(net, (1, 3, arch.space.input_size, arch.space.input_size),
                           args.runtime, args.threads, args.runs, args.warmup).median_ms


def _summary(rows, key):
    errors = np.array([row[key] for row in rows])
    return {'mean_abs_rel_error': float(np.abs(errors).mean()),
            'max_abs_rel_error': float(np.abs(errors).max()),
            'mean_signed_rel_error': float(errors.mean())}


def predictor_error(args, space):
    """Two views. 'table': one table measured first, then every subnet measured whole.
    'paired': for each subnet, its 22 entries re-measured between two whole-network
    measurements, so a change of machine load during the bench hits both sides alike."""
    archs = random_archs(space, args.samples, args.seed)
    needed = sorted({(p, a.blocks[p], a.channels[p]) for a in archs for p in range(NUM_POSITIONS)})
    table_path = args.table or os.path.join(tempfile.gettempdir(), 'latency_table_%s_%s_t%d.json'
                                            % (args.runtime, space.key(), args.threads))
    start = time.time()
    table = measure_latency_table(space, runtime=args.runtime, threads=args.threads,
                                  runs=args.runs, warmup=args.warmup, entries=needed,
                                  path=table_path, resume=True)
    table_s = time.time() - start
    rows = []
    for index, arch in enumerate(archs):
        before = _measure(arch, args)
        own = [(p, arch.blocks[p], arch.channels[p]) for p in range(NUM_POSITIONS)]
        fresh = measure_latency_table(space, runtime=args.runtime, threads=args.threads,
                                      runs=args.runs, warmup=args.warmup, entries=own)
        measured = (before + _measure(arch, args)) / 2
        row = {'arch': str(arch), 'measured_ms': measured, 'measured_before_ms': before,
               'predicted_ms': predict_latency(table, arch),
               'paired_predicted_ms': predict_latency(fresh, arch)}
        row['rel_error'] = (row['predicted_ms'] - measured) / measured
        row['paired_rel_error'] = (row['paired_predicted_ms'] - measured) / measured
        rows.append(row)
        print('%2d %s  measured %7.3f ms | table %7.3f ms %+6.1f %% | paired %7.3f ms %+6.1f %%'
              % (index, arch, measured, row['predicted_ms'], 100 * row['rel_error'],
                 row['paired_predicted_ms'], 100 * row['paired_rel_error']), flush=True)
    summary = {'table': _summary(rows, 'rel_error'), 'paired': _summary(rows, 'paired_rel_error'),
               'entries_measured': len(needed), 'table_seconds': table_s, 'table_path': table_path,
               'flush_bytes': table['config']['flush_bytes'],
               'call_overhead_ms': table['config']['call_overhead_ms']}
    for view in ('table', 'paired'):
        print('%-6s mean |error| %.1f %%, max |error| %.1f %% over %d subnets'
              % (view, 100 * summary[view]['mean_abs_rel_error'],
                 100 * summary[view]['max_abs_rel_error'], len(rows)))
    return {'summary': summary, 'subnets': rows}


def op_sums(args):
    results = {}
    for runtime in RUNTIMES:
        net = load_model('oneshot_plus', input_size=args.input_size).net
        profile = profile_op_by_op(net, input_size=args.input_size, runtime=runtime,
                                   threads=args.threads, runs=args.runs, warmup=args.warmup,
                                   model_name='oneshot_plus')
        results[runtime] = {'latency_ms': profile.latency.median_ms,
                            'profiled_ms': profile.profiled.median_ms,
                            'op_sum_ms': profile.op_sum_ms, 'coverage': profile.coverage,
                            'ops': len(profile.rows)}
        print('%-12s op sum %8.3f ms  end-to-end %8.3f ms  ratio %.3f'
              % (runtime, profile.op_sum_ms, profile.latency.median_ms, profile.coverage))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runtime', default='onnxruntime', choices=RUNTIMES)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--samples', type=int, default=20)
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--table', default=None, help='latency table to complete and use')
    parser.add_argument('--skip-op-sums', action='store_true')
    parser.add_argument('--out', default=os.path.join(HERE, 'results_latency.json'))
    args = parser.parse_args()
    space = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=args.input_size)
    # the load average says how busy the machine was: other work slows whole networks more
    # than the short runs of single blocks
    result = {'config': dict(vars(args), cpu=cpu_model(), batch_size=1, space=space.key(),
                             load_average_before=os.getloadavg()),
              'predictor': predictor_error(args, space)}
    if not args.skip_op_sums:
        result['op_sums'] = op_sums(args)
    result['config']['load_average_after'] = os.getloadavg()
    results = {}
    if os.path.exists(args.out):  # one file, one entry per runtime/threads/input size
        with open(args.out) as handle:
            results = json.load(handle)
    results['%s_t%d_in%d' % (args.runtime, args.threads, args.input_size)] = result
    with open(args.out, 'w') as handle:
        json.dump(results, handle, indent=2)
    print('wrote', args.out)


if __name__ == '__main__':
    main()
