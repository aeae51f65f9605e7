"""Counting throughput: candidates per second through the lookup table vs building and counting
each network (issue 4; goal >= 100,000 candidates/s through the table on one core).

Run: ``OMP_NUM_THREADS=1 python bench/bench_counting.py [--space se_lcap] [--out FILE]``.
Writes ``bench/results_counting.json`` and prints a table; it never asserts.
"""
import argparse
import json
import os
import platform
import random
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas.counting import count_net  # noqa: E402
from nas.lookup_table import LookupTable  # noqa: E402
from nas.network import OneShotNet  # noqa: E402
from nas.space import Arch, NUM_BLOCKS, NUM_POSITIONS, NUM_SCALES, SearchSpace  # noqa: E402
from profiling.timing import cpu_model

SPACES = {
    'se_lcap': SearchSpace(use_se=True, last_conv_after_pooling=True),
    'plain': SearchSpace(),
}


def _vectors(count, seed):
    rng = random.Random(seed)
    return [(tuple(rng.randrange(NUM_BLOCKS) for _ in range(NUM_POSITIONS)),
             tuple(rng.randrange(NUM_SCALES) for _ in range(NUM_POSITIONS)))
            for _ in range(count)]


def _rate(func, items, min_seconds):
    """Items per second of ``func`` over ``items``, repeated for at least ``min_seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            func(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed, done


def run(space_name, table_candidates, network_candidates, min_seconds):
    space = SPACES[space_name]
    start = time.perf_counter()
    table = LookupTable.build(space)
    build_s = time.perf_counter() - start
    vectors = _vectors(table_candidates, seed=0)
    archs = [Arch(blocks, channels, space) for blocks, channels in vectors]
    size = space.input_size

    def count(arch):
        report = count_net(OneShotNet(arch), (3, size, size))
        return report.flops, report.params
    rows = {
        'table: cost(arch)': _rate(table.cost, archs, min_seconds),
        'table: Arch(vectors) + cost': _rate(
            lambda v: table.cost(Arch(v[0], v[1], space)), vectors, min_seconds),
        'build network + count_net': _rate(count, archs[:network_candidates], 0),
    }
    mismatches = sum(table.cost(a) != count(a) for a in archs[:network_candidates])
    return {
        'space': space.key(), 'table_build_s': build_s,
        'candidates_per_s': {name: rate for name, (rate, _) in rows.items()},
        'candidates_timed': {name: done for name, (_, done) in rows.items()},
        'speedup_table_vs_network': rows['table: cost(arch)'][0]
        / rows['build network + count_net'][0],
        'table_vs_counter_mismatches': mismatches,
        'goal_candidates_per_s': 100000,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--space', choices=sorted(SPACES), default='se_lcap')
    parser.add_argument('--table-candidates', type=int, default=20000)
    parser.add_argument('--network-candidates', type=int, default=20)
    parser.add_argument('--min-seconds', type=float, default=2.0)
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__),
                                                      'results_counting.json'))
    args = parser.parse_args()
    result = run(args.space, args.table_candidates, args.network_candidates, args.min_seconds)
    result.update(cpu=cpu_model(), python=platform.python_version(),
                  omp_num_threads=os.environ.get('OMP_NUM_THREADS'))
    with open(args.out, 'w') as handle:
        json.dump(result, handle, indent=2)
    print('search space %s on %s (one process, OMP_NUM_THREADS=%s)'
          % (result['space'], result['cpu'], result['omp_num_threads']))
    print('table build (40 subnets traced): %.2f s' % result['table_build_s'])
    print('%-30s %16s %12s' % ('method', 'candidates/s', 'timed'))
    for name, rate in result['candidates_per_s'].items():
        print('%-30s %16s %12d' % (name, '{:,.0f}'.format(rate),
                                  result['candidates_timed'][name]))
    print('table vs network: %.0fx faster; %d mismatches over %d candidates'
          % (result['speedup_table_vs_network'], result['table_vs_counter_mismatches'],
             args.network_candidates))
    print('wrote %s' % args.out)


if __name__ == '__main__':
    main()
