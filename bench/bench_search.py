"""Search benchmark on the embedded digits: genetic vs random search at the same number of
evaluated candidates (3 seeds), the effect of BN recalibration on 20 sampled subnets, and
candidate evaluations per minute. Writes bench/results_search.json.

    python bench/bench_search.py [--epochs 4] [--mode channel|joint] [--out bench/results_search.json]
"""
import argparse
import json
import os
import random
import statistics
import tempfile
import time

import numpy as np

from nas.data import open_dataset
from nas.evaluate import PathEvaluator
from nas.sampler import UniformSampler
from nas.constraints import Constraints
from nas.search import SearchConfig, run_search
from nas.search_run import SearchData, load_supernet, make_cost
from nas.space import Arch, SearchSpace
from nas.train import TrainConfig, train_supernet

SPACE = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=32, classes=10)
BLOCKS = (0, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0, 1, 2, 2, 1, 2, 0, 0, 2, 0)  # OneShot-S+'s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--mode', choices=['channel', 'joint'], default='channel')
    parser.add_argument('--population', type=int, default=8)
    parser.add_argument('--generations', type=int, default=3)
    parser.add_argument('--max-flops', type=float, default=6e6)
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__),
                                                      'results_search.json'))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='bench-search-')
    run_dir = os.path.join(work, 'supernet')
    start = time.time()
    sampler = UniformSampler(SPACE, mode=args.mode, seed=0,
                             fixed_blocks=BLOCKS if args.mode == 'channel' else None)
    train_supernet(SPACE, open_dataset('digits', 'train', 32), None, run_dir,
                   TrainConfig(epochs=args.epochs, batch_size=32, lr=0.05, warmup_epochs=0.5,
                               recal_images=64), sampler=sampler, progress=True)
    train_seconds = time.time() - start

    supernet = load_supernet(run_dir)
    data = SearchData('digits', SPACE, batch_size=64, recalib_batches=4)
    cost, _ = make_cost(SPACE)
    evaluate = PathEvaluator(supernet, data.recal, data.val)
    limits = Constraints(max_flops=args.max_flops)
    frozen = dict(fixed_blocks=BLOCKS) if args.mode == 'channel' else {}
    space_mode = 'channel' if args.mode == 'channel' else 'joint'

    eval_times, comparison = [], []
    timed = _timed(evaluate, eval_times)
    for seed in range(3):
        genetic = SearchConfig(strategy='genetic', space=space_mode, population=args.population,
                               generations=args.generations, elite=max(2, args.population // 4),
                               seed=seed, **frozen)
        folder = os.path.join(work, 'genetic%d' % seed)
        best_genetic = run_search(SPACE, genetic, limits, cost, timed, folder)[0]
        evaluated = len(json.load(open(os.path.join(folder, 'candidates.json'))))
        rand = SearchConfig(strategy='random', space=space_mode, random_iters=evaluated,
                            count_illegal=False, seed=seed, **frozen)  # equal evaluations
        best_random = run_search(SPACE, rand, limits, cost, timed,
                                 os.path.join(work, 'random%d' % seed))[0]
        comparison.append({'seed': seed, 'evaluated': evaluated,
                           'genetic_best_top1': best_genetic.top1,
                           'random_best_top1': best_random.top1})
        print(comparison[-1], flush=True)

    rng = random.Random(1)
    subnets = [Arch(BLOCKS if args.mode == 'channel' else
                    tuple(rng.randrange(4) for _ in range(20)),
                    tuple(rng.randrange(10) for _ in range(20)), SPACE) for _ in range(20)]
    without = PathEvaluator(supernet, [], data.val)
    recal = [{'arch': str(a), 'with_recal': evaluate(a), 'without_recal': without(a)}
             for a in subnets]
    mean_genetic = statistics.mean(c['genetic_best_top1'] for c in comparison)
    mean_random = statistics.mean(c['random_best_top1'] for c in comparison)
    results = {
        'machine': {'cpu_count': os.cpu_count(), 'load_average': os.getloadavg()},
        'supernet': {'mode': args.mode, 'epochs': args.epochs, 'train_seconds': train_seconds},
        'genetic_vs_random': comparison,
        'genetic_mean_best_top1': mean_genetic, 'random_mean_best_top1': mean_random,
        'genetic_better': mean_genetic > mean_random,
        'bn_recalibration': {
            'subnets': recal,
            'mean_with': float(np.mean([r['with_recal'] for r in recal])),
            'mean_without': float(np.mean([r['without_recal'] for r in recal]))},
        'evaluations_per_minute': 60.0 / statistics.median(eval_times),
        'val_images': sum(len(y) for _, y in data.val),
    }
    with open(args.out, 'w') as handle:
        json.dump(results, handle, indent=2)
    print(json.dumps({k: v for k, v in results.items() if k != 'bn_recalibration'}, indent=2))
    print('BN recal: mean top-1 with %.4f, without %.4f' % (
        results['bn_recalibration']['mean_with'], results['bn_recalibration']['mean_without']))


def _timed(evaluate, times):
    def wrapper(arch):
        start = time.time()
        value = evaluate(arch)
        times.append(time.time() - start)
        return value
    return wrapper


if __name__ == '__main__':
    main()
