"""Training throughput: supernet vs the fixed OneShot-S+ subnet at the same input size and batch.

Each case runs ``nas.train.train`` for one epoch of embedded digits (upscaled) in its own process
(so peak RSS is its own) and reports the median step of the timed steps, after warm-up steps.
Cases: ``subnet`` (OneShot-S+, hybridized), ``supernet_path`` (the supernet trained on the
OneShot-S+ path: same work, masked full-width layers), ``supernet_uniform`` (uniform joint
sampling, the real supernet workload), ``subnet_bfloat16`` (the subnet computing in bfloat16
through MXNet AMP, ``nas.precision``). Goals: supernet step <= 1.25 x subnet step; the bfloat16
figure is reported against float32 on this CPU (``bfloat16`` in the results).

    python bench/bench_train.py [--input-size 64] [--batch-size 32] [--steps 10]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
CASES = ('subnet', 'supernet_path', 'supernet_uniform', 'subnet_bfloat16')


def run_case(case, input_size, batch_size, steps, warmup):
    """Train one epoch of (warmup + steps) batches; returns the timing record."""
    import numpy as np
    from nas.data import open_dataset
    from nas.network import OneShotNet
    from nas.sampler import PathSampler, UniformSampler
    from nas.train import TrainConfig, read_metrics, train
    from zoo import get_card

    arch = get_card('oneshot_s_plus').arch.with_space(input_size=input_size, classes=10)
    space = arch.space

    class FixedPath(PathSampler):
        kind = 'fixed'

        def sample(self, *args):
            return arch

    data = open_dataset('digits', 'train', input_size, 0)
    data = data.subset(np.arange((warmup + steps) * batch_size) % len(data))
    if case.startswith('subnet'):
        net, sampler = OneShotNet(arch), None
    else:
        net = OneShotNet(space=space)
        sampler = FixedPath(space) if case == 'supernet_path' else UniformSampler(space)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=0.01, warmup_epochs=0,
                         dtype='bfloat16' if case.endswith('bfloat16') else 'float32')
    with tempfile.TemporaryDirectory() as run_dir:
        train(net, data, None, run_dir, config, sampler=sampler,
              hybridize=case.startswith('subnet'))
        records = [r for r in read_metrics(os.path.join(run_dir, 'metrics.jsonl'))
                   if r['kind'] == 'step'][warmup:]
    step_s = float(np.median([batch_size / r['img_per_s'] for r in records]))
    return {'case': case, 'arch': str(arch) if case != 'supernet_uniform' else 'uniform',
            'step_ms': 1e3 * step_s, 'img_per_s': batch_size / step_s,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            'timed_steps': len(records)}


def _bf16_flags():
    """The CPU's bfloat16-related flags (AVX-512 BF16, AMX), from /proc/cpuinfo."""
    try:
        with open('/proc/cpuinfo') as handle:
            flags = next((line.split(':', 1)[1].split() for line in handle
                          if line.startswith('flags')), [])
    except OSError:
        return []
    return sorted(f for f in flags if 'bf16' in f or f.startswith('amx'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--output', default=os.path.join(HERE, 'results_train.json'))
    parser.add_argument('--child', choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.input_size, args.batch_size, args.steps,
                                  args.warmup)))
        return
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, '--child', case,
                              '--input-size', str(args.input_size),
                              '--batch-size', str(args.batch_size), '--steps', str(args.steps),
                              '--warmup', str(args.warmup)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    subnet = rows[0]['step_ms']
    for row in rows:
        row['step_vs_subnet'] = row['step_ms'] / subnet
    bf16 = next(row['step_ms'] for row in rows if row['case'] == 'subnet_bfloat16')
    result = {'input_size': args.input_size, 'batch_size': args.batch_size,
              'goal': 'supernet step <= 1.25 x subnet step', 'cases': rows,
              'bfloat16': {'step_ms_float32': subnet, 'step_ms_bfloat16': bf16,
                           'speedup': subnet / bf16, 'cpu_flags': _bf16_flags()},
              'cpu': platform.processor() or platform.machine(),
              'cpu_count': os.cpu_count(), 'omp_num_threads': os.environ.get('OMP_NUM_THREADS')}
    with open(args.output, 'w') as handle:
        json.dump(result, handle, indent=2)
    print('input %d, batch %d (OMP_NUM_THREADS=%s)' % (args.input_size, args.batch_size,
                                                      result['omp_num_threads']))
    print('%-18s %10s %10s %12s %14s' % ('case', 'step ms', 'img/s', 'vs subnet', 'peak RSS MB'))
    for row in rows:
        print('%-18s %10.1f %10.1f %11.2fx %14.0f' % (row['case'], row['step_ms'],
                                                     row['img_per_s'], row['step_vs_subnet'],
                                                     row['peak_rss_mb']))
    print('bfloat16 subnet step %.1f ms vs float32 %.1f ms: %.2fx (CPU flags %s)' % (
        bf16, subnet, subnet / bf16, ' '.join(result['bfloat16']['cpu_flags']) or 'none'))
    print('wrote %s' % args.output)


if __name__ == '__main__':
    main()
