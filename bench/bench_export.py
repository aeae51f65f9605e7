"""Deployment latency (issue 5): MXNet hybridized, MXNet merged-BN + oneDNN fusion and onnxruntime
for OneShot-S+, gluoncv mobilenetv3_large and mobilenetv2_1.0, exported the same way, all in one
run; the shuffle formulations of OneShot-S+; where onnxruntime spends the time; the machine's
float32 GEMM peak.

Run: ``python bench/bench_export.py [--runs 50] [--runs32 10] [--out bench/results_export]``.
Two threads everywhere (OMP_NUM_THREADS=2, onnxruntime intra_op_num_threads=2). Writes
``<out>.json`` and ``<out>.md``; it never asserts. Weights are random with unit-scale activations
(Xavier, randomised BN statistics): speed does not depend on their values, but tiny activations
would hit denormal slow paths that trained weights never see.
"""
import argparse
import json
import os
import tempfile

from common import (gemm_peak, interleaved, machine, mxnet_runner, mxnet_variants,
                    ort_op_profile, ort_runner, stats, unit_scale_net)
from export.merge_bn import merge_bn
from export.onnx import ONNX_CHANNEL_BLOCK, export_onnx

MODELS = ('oneshot_s_plus', 'mobilenetv3_large', 'mobilenetv2_1.0')
SIZE = 224
# (shuffle form, channel block): the naive export first, the shipped default last
FORMS = {'naive (reshape/transpose)': ('reshape', None), 'gather': ('gather', None),
         'slices': ('slices', None), 'reshape + padding': ('reshape', 16),
         'gather + padding': ('gather', 16), 'slices + padding (default)': ('slices', 16)}
GOAL_RATIO, GOAL_PEAK_FRACTION, GOAL_MXNET_SPEEDUP = 1.3, 0.40, 1.5


def _timed(funcs, runs, rounds=5):
    """Latency stats of each candidate, timed in ``rounds`` alternating chunks."""
    times = interleaved(funcs, runs, chunk=max(1, runs // rounds))
    return {key: stats(values) for key, values in times.items()}


def run(runs, runs32, folder):
    results = {'machine': machine(), 'models': {}, 'forms': {}, 'profile': {}}
    peak_before = gemm_peak()
    paths, forms = {}, {}
    for name in MODELS:
        net, counts = unit_scale_net(name, SIZE)
        merged = merge_bn(net, (1, 3, SIZE, SIZE))
        paths[name] = os.path.join(folder, name + '.onnx')
        export_onnx(merged, paths[name], (1, 3, SIZE, SIZE), opset=13, dynamic_batch=True,
                    channel_block=ONNX_CHANNEL_BLOCK)  # what nas-export writes
        results['models'][name] = {'macs': counts.flops, 'onnxruntime': {}, 'mxnet': {}}
        for batch, count in (('b1', runs), ('b32', runs32)):
            shape = (int(batch[1:]), 3, SIZE, SIZE)
            timed = _timed({kind: mxnet_runner(block, shape) for kind, block
                            in mxnet_variants(net, shape).items()}, count)
            for kind, entry in timed.items():
                results['models'][name]['mxnet'].setdefault(kind, {})[batch] = entry
            print(name, batch, 'MXNet', timed, flush=True)
        if name == 'oneshot_s_plus':
            for label, (form, block) in FORMS.items():
                forms[label] = os.path.join(folder, 'form%d.onnx' % len(forms))
                export_onnx(merged, forms[label], (1, 3, SIZE, SIZE), opset=13,
                            dynamic_batch=True, shuffle=form, channel_block=block)
    for batch, count in (('b1', runs), ('b32', runs32)):  # every onnxruntime graph, interleaved
        shape = (int(batch[1:]), 3, SIZE, SIZE)
        candidates = dict(paths, **{'form: ' + k: v for k, v in forms.items()})
        timed = _timed({key: ort_runner(path, shape) for key, path in candidates.items()}, count)
        for key, entry in timed.items():
            if key.startswith('form: '):
                results['forms'].setdefault(key[6:], {})[batch] = entry
            else:
                results['models'][key]['onnxruntime'][batch] = entry
        print('onnxruntime', batch, timed, flush=True)
    for name in ('oneshot_s_plus', 'mobilenetv3_large'):
        results['profile'][name] = {
            'b1': ort_op_profile(paths[name], (1, 3, SIZE, SIZE), 20, folder),
            'b32': ort_op_profile(paths[name], (32, 3, SIZE, SIZE), 3, folder)}
    peak_after = gemm_peak()
    results['gemm_peak'] = {key: max(peak_before[key], peak_after[key]) for key in peak_before}
    results['gemm_peak']['before_after'] = [peak_before, peak_after]
    results['machine']['load_average_after'] = [round(v, 2) for v in os.getloadavg()]
    results['goals'] = _goals(results)
    return results


def _goals(results):
    models, peak = results['models'], results['gemm_peak']
    ort_ms = {name: {b: models[name]['onnxruntime'][b]['median_ms'] for b in ('b1', 'b32')}
              for name in models}
    goals = []
    for batch in ('b1', 'b32'):
        ratio = ort_ms['oneshot_s_plus'][batch] / ort_ms['mobilenetv3_large'][batch]
        goals.append({'goal': 'OneShot-S+ / mobilenetv3_large latency, onnxruntime, %s' % batch,
                      'target': '<= %.1fx' % GOAL_RATIO, 'value': round(ratio, 3),
                      'met': ratio <= GOAL_RATIO})
    best_peak = max(peak['numpy'], peak['mxnet'])
    achieved = 2 * models['oneshot_s_plus']['macs'] * 32 / (ort_ms['oneshot_s_plus']['b32'] / 1e3)
    fraction = achieved / 1e9 / best_peak
    goals.append({'goal': 'OneShot-S+ batch 32 in onnxruntime, share of float32 GEMM peak '
                          '(%.1f GFLOPS achieved, 2 flops per multiply-add)' % (achieved / 1e9),
                  'target': '>= %d %%' % (100 * GOAL_PEAK_FRACTION),
                  'value': round(fraction, 3), 'met': fraction >= GOAL_PEAK_FRACTION})
    for batch in ('b1', 'b32'):
        mxnet = models['oneshot_s_plus']['mxnet']
        plain = mxnet['hybridized'][batch]['median_ms']
        best_kind = min((k for k in mxnet if k != 'hybridized'),
                        key=lambda k: mxnet[k][batch]['median_ms'])
        speedup = plain / mxnet[best_kind][batch]['median_ms']
        goals.append({'goal': 'OneShot-S+ MXNet deployment path (%s) vs plain hybridized, %s'
                              % (best_kind, batch),
                      'target': '>= %.1fx faster' % GOAL_MXNET_SPEEDUP,
                      'value': round(speedup, 3), 'met': speedup >= GOAL_MXNET_SPEEDUP})
    return goals


def _markdown(results):
    machine, peak = results['machine'], results['gemm_peak']
    lines = ['# Export benchmark (issue 5)', '',
             '%s, %d threads; load average %s before, %s after (shared machine: other '
             'engineers\' jobs ran alongside, so absolute figures are noisy; the candidates of '
             'each table were timed in alternating chunks, so their ratios saw the same load). '
             'float32 GEMM peak (best of before and after): numpy %.1f GFLOPS, MXNet %.1f GFLOPS.'
             % (machine['cpu'], machine['threads'], machine['load_average'],
                machine['load_average_after'], peak['numpy'], peak['mxnet']), '',
             '## Goals', '', '| goal | target | reached | met |', '|---|---|---|---|']
    for goal in results['goals']:
        lines.append('| %s | %s | %s | %s |' % (goal['goal'], goal['target'], goal['value'],
                                              'met' if goal['met'] else 'not met'))
    lines += ['', '## Latency, 224x224, median / p90 ms', '',
              '| model | MMACs | batch | onnxruntime | MXNet hybridized | MXNet merged BN + '
              'oneDNN | MXNet hybridized + oneDNN |', '|---|---|---|---|---|---|---|']
    for name, entry in results['models'].items():
        for batch in ('b1', 'b32'):
            cells = [entry['onnxruntime'][batch]] + [entry['mxnet'][k][batch] for k in (
                'hybridized', 'merged_bn+onednn', 'hybridized+onednn')]
            lines.append('| %s | %.1f | %s | %s |' % (
                name, entry['macs'] / 1e6, batch[1:], ' | '.join(
                    '%.2f / %.2f' % (c['median_ms'], c['p90_ms']) for c in cells)))
    lines += ['', '## OneShot-S+ shuffle formulations in onnxruntime (median / p90 ms)', '',
              '| formulation | batch 1 | batch 32 |', '|---|---|---|']
    for label, entry in results['forms'].items():
        lines.append('| %s | %.2f / %.2f | %.2f / %.2f |' % (
            label, entry['b1']['median_ms'], entry['b1']['p90_ms'], entry['b32']['median_ms'],
            entry['b32']['p90_ms']))
    for name, per_batch in results['profile'].items():
        lines += ['', '## Where onnxruntime spends the time: %s' % name, '',
                  '| op type | batch 1 ms | share | batch 32 ms | share |', '|---|---|---|---|---|']
        ops = list(per_batch['b32'])
        for op in ops + [o for o in per_batch['b1'] if o not in ops]:
            one, big = per_batch['b1'].get(op), per_batch['b32'].get(op)
            lines.append('| %s | %s | %s | %s | %s |' % (
                op, one['ms'] if one else '-', '%.1f %%' % (100 * one['share']) if one else '-',
                big['ms'] if big else '-', '%.1f %%' % (100 * big['share']) if big else '-'))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=50, help='timed runs at batch 1')
    parser.add_argument('--runs32', type=int, default=10, help='timed runs at batch 32')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__),
                                                      'results_export'))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = run(args.runs, args.runs32, folder)
    with open(args.out + '.json', 'w') as handle:
        json.dump(results, handle, indent=2)
    text = _markdown(results)
    with open(args.out + '.md', 'w') as handle:
        handle.write(text)
    print(text)


if __name__ == '__main__':
    main()
