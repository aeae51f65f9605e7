"""The benchmark of record: one command, one run, one machine; writes bench/results.json and
bench/results.md (the table the README quotes).

1. Deployment table. OneShot-S+, OneShot+ and OneShot beside gluoncv mobilenetv3_large,
   mobilenetv2_1.0 and resnet18_v1, input 224, 2 threads: MACs, params, MicroNet score (32 bit,
   and of the onnxruntime INT8 graph at its own bit widths), latency at batch 1 and throughput at
   batch 32 on five runtimes (MXNet hybridized, MXNet merged BN + oneDNN fusion, onnxruntime FP32,
   onnxruntime INT8 static QDQ U8S8, MXNet INT8 oneDNN), and the GFLOPS each reaches at batch 32
   against this machine's float32 GEMM peak (a 4096^3 product, before and after, best kept).
   For each batch size the 30 runners are timed in alternating chunks, so a change of load hits
   all of them alike; ratios are medians of paired times. Weights are random with unit-scale
   activations (speed does not depend on their values); INT8 calibration uses the embedded digits.
2. The other issues' benchmarks, each run here as a child process (``--skip`` leaves one out):
   counting (bench_counting.py), training step (bench_train.py), latency predictor
   (bench_latency_predictor.py, with a table measured in this run) and search (bench_search.py).
3. Every goal the issues set, with the value reached and met / not met.

The tables are also quoted in README.md, between its bench markers (``--no-readme``: not).

    python bench/run_all.py [--runs 50] [--runs32 10] [--skip search ...] [--out bench/results]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import (THREADS, gemm_peak, interleaved, machine, mxnet_runner, mxnet_variants,
                    ort_runner, paired_ratio, stats, unit_scale_net)
from export.merge_bn import merge_bn  # noqa: E402  (after common: it pins the threads)
from export.onnx import export_onnx  # noqa: E402
from nas.atomic import write_json, write_text  # noqa: E402
from profiling.scores import micronet_score  # noqa: E402
from quantization.calib import ArrayReader, open_reader  # noqa: E402
from quantization.mxnet_int8 import quantize_mxnet  # noqa: E402
from quantization.ort_int8 import quantize_ort  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ('oneshot_s_plus', 'oneshot_plus', 'oneshot', 'mobilenetv3_large', 'mobilenetv2_1.0',
          'resnet18_v1')
RUNTIMES = ('mxnet', 'mxnet_merged_bn', 'ort_fp32', 'ort_int8', 'mxnet_int8')
RUNTIME_LABELS = {'mxnet': 'MXNet', 'mxnet_merged_bn': 'MXNet merged BN + oneDNN',
                  'ort_fp32': 'ORT FP32', 'ort_int8': 'ORT INT8', 'mxnet_int8': 'MXNet INT8'}
BATCHES = (1, 32)
README = os.path.join(os.path.dirname(HERE), 'README.md')
QUOTE_START, QUOTE_END = '<!-- bench/results.md -->', '<!-- end of bench/results.md -->'
# child benchmark: (script, extra arguments, results file)
CHILDREN = {
    'counting': ('bench_counting.py', [], 'results_counting.json'),
    'train': ('bench_train.py', [], 'results_train.json'),
    'predictor': ('bench_latency_predictor.py', ['--skip-op-sums'], 'results_latency.json'),
    'search': ('bench_search.py', [], 'results_search.json'),
}


def say(message):
    print(message, flush=True)


def prepare(name, size, calib, folder):
    """Counts, MicroNet scores and the three fixed runtimes (ONNX FP32 / INT8, MXNet INT8) of
    one model; the MXNet FP32 variants are built per batch size (their graphs are shape-bound)."""
    net, counts = unit_scale_net(name, size)
    shape = (1, 3, size, size)
    fp32, int8 = (os.path.join(folder, name + suffix) for suffix in ('.onnx', '.int8.onnx'))
    export_onnx(merge_bn(net, shape), fp32, shape, opset=13, dynamic_batch=True,
                channel_block=16)  # what nas-export writes
    ort_report = quantize_ort(fp32, int8, ArrayReader(calib))
    qnet, mx_report = quantize_mxnet(net, ArrayReader(calib), shape)
    qnet.hybridize(static_alloc=True, static_shape=True)
    entry = {'macs': counts.flops, 'params': counts.params,
             'micronet_fp32': round(micronet_score(net, shape, bits=32).score, 4),
             'micronet_ort_int8': round(micronet_score(int8).score, 4),
             'int8_convs': {'ort_int8': '%d/%d' % (ort_report.num_int8_convs, ort_report.num_convs),
                            'mxnet_int8': '%d/%d' % (mx_report.num_int8_convs,
                                                     mx_report.num_convs)},
             'file_bytes': {'ort_fp32': os.path.getsize(fp32), 'ort_int8': os.path.getsize(int8)}}
    return entry, {'net': net, 'fp32': fp32, 'int8': int8, 'qnet': qnet}


def runners_for(parts, batch, size):
    shape = (batch, 3, size, size)
    variants = mxnet_variants(parts['net'], shape)
    return {'mxnet': mxnet_runner(variants['hybridized'], shape),
            'mxnet_merged_bn': mxnet_runner(variants['merged_bn+onednn'], shape),
            'ort_fp32': ort_runner(parts['fp32'], shape),
            'ort_int8': ort_runner(parts['int8'], shape),
            'mxnet_int8': mxnet_runner(parts['qnet'], shape)}


def deployment_table(models, size, runs, runs32, calib_images, folder, progress=say):
    calib = open_reader('digits', size, num_images=calib_images).batches
    result = {'machine': machine(), 'input_size': size, 'models': {}, 'paired': {}}
    peaks = [gemm_peak()]
    parts = {}
    for name in models:
        start = time.time()
        result['models'][name], parts[name] = prepare(name, size, calib, folder)
        progress('prepared %s in %.0f s' % (name, time.time() - start))
    for batch, count in zip(BATCHES, (runs, runs32)):
        funcs = {(name, runtime): func for name in models
                 for runtime, func in runners_for(parts[name], batch, size).items()}
        start = time.time()
        times = interleaved(funcs, count, chunk=max(1, count // 5))
        progress('timed %d runners at batch %d in %.0f s' % (len(funcs), batch,
                                                              time.time() - start))
        for (name, runtime), seconds in times.items():
            entry = result['models'][name].setdefault(runtime, {})
            entry['b%d' % batch] = stats(seconds)
        result['paired']['b%d' % batch] = _paired(times, models)
    peaks.append(gemm_peak())
    result['gemm_peak'] = {'gflops': max(max(peak.values()) for peak in peaks),
                           'before': peaks[0], 'after': peaks[1]}
    _throughput(result)
    result['machine']['load_average_after'] = [round(v, 2) for v in os.getloadavg()]
    return result


def _paired(times, models):
    """The ratios the goals need, each from paired times of one interleaved run."""
    ratios = {}
    for name in models:
        ratios[name] = {
            'ort_int8_speedup': paired_ratio(times, (name, 'ort_fp32'), (name, 'ort_int8')),
            'mxnet_int8_speedup': paired_ratio(times, (name, 'mxnet_merged_bn'),
                                               (name, 'mxnet_int8')),
            'mxnet_merged_bn_speedup': paired_ratio(times, (name, 'mxnet'),
                                                    (name, 'mxnet_merged_bn'))}
    if 'oneshot_s_plus' in models and 'mobilenetv3_large' in models:
        ratios['oneshot_s_plus_vs_mobilenetv3_large_ort'] = paired_ratio(
            times, ('oneshot_s_plus', 'ort_fp32'), ('mobilenetv3_large', 'ort_fp32'))
    return ratios


def _throughput(result):
    """Images/s and achieved GFLOPS (2 flops per multiply-add) at the largest batch."""
    batch, peak = max(BATCHES), result['gemm_peak']['gflops']
    for entry in result['models'].values():
        for runtime in RUNTIMES:
            seconds = entry[runtime]['b%d' % batch]['median_ms'] / 1e3
            gflops = 2 * entry['macs'] * batch / seconds / 1e9
            entry[runtime].update(images_per_s=round(batch / seconds, 1),
                                  gflops=round(gflops, 1), peak_share=round(gflops / peak, 3))


def run_children(names, folder, progress=say):
    """Run the other benchmarks, each in its own process; their own results files are
    refreshed. Returns {name: results} (or {'error': ...} for one that failed)."""
    found = {}
    for name in names:
        script, extra, results_file = CHILDREN[name]
        if name == 'predictor':  # measure its table in this run, not from an earlier cache
            extra = extra + ['--table', os.path.join(folder, 'latency_table.json')]
        start = time.time()
        progress('running %s ...' % script)
        done = subprocess.run([sys.executable, os.path.join(HERE, script)] + extra, cwd=HERE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ['?'])[-1]
            found[name] = {'error': '%s exited with %d: %s' % (script, done.returncode, last)}
        else:
            with open(os.path.join(HERE, results_file)) as handle:
                found[name] = json.load(handle)
        progress('%s done in %.0f s' % (script, time.time() - start))
    return found


def goals(table, children):
    """Every goal of the issues that this run measured: (issue, goal, target, value, met)."""
    rows = []
    paired = table['paired']
    models = table['models']
    if 'oneshot_s_plus_vs_mobilenetv3_large_ort' in paired['b1']:
        for batch in ('b1', 'b32'):
            value = paired[batch]['oneshot_s_plus_vs_mobilenetv3_large_ort']
            rows.append(_goal(5, 'OneShot-S+ / mobilenetv3_large latency, ORT FP32, batch %s'
                              % batch[1:], '<= 1.3x', value, value <= 1.3, '%.2fx'))
    if 'oneshot_s_plus' in models:
        share = models['oneshot_s_plus']['ort_fp32']['peak_share']
        rows.append(_goal(5, 'OneShot-S+ ORT FP32 batch 32, share of the float32 GEMM peak',
                          '>= 40 %', share, share >= 0.40, '%.0f %%', 100))
        for batch in ('b1', 'b32'):
            value = paired[batch]['oneshot_s_plus']['mxnet_merged_bn_speedup']
            rows.append(_goal(5, 'OneShot-S+ MXNet merged BN + oneDNN vs hybridized, batch %s'
                              % batch[1:], '>= 1.5x', value, value >= 1.5, '%.2fx'))
        value = paired['b32']['oneshot_s_plus']['ort_int8_speedup']
        rows.append(_goal(6, 'OneShot-S+ ORT INT8 vs FP32, batch 32', '>= 2x', value,
                          value >= 2, '%.2fx'))
        value = paired['b32']['oneshot_s_plus']['mxnet_int8_speedup']
        rows.append(_goal(6, 'OneShot-S+ MXNet INT8 vs MXNet FP32 (merged BN + oneDNN), batch 32',
                          'not slower (>= 1x)', value, value >= 1, '%.2fx'))
    rows += _child_goals(children)
    return rows


def _child_goals(children):
    rows = []
    for name, found in children.items():
        if 'error' in found:
            rows.append({'issue': '-', 'goal': name + ' benchmark', 'target': '-',
                         'value': found['error'], 'met': None, 'failed': True})
        elif name == 'counting':
            value = found['candidates_per_s']['table: cost(arch)']
            rows.append(_goal(4, 'candidates/s through the lookup table', '>= 100,000/s',
                              value, value >= 1e5, '{:,.0f}/s'))
        elif name == 'train':
            value = next(case['step_vs_subnet'] for case in found['cases']
                         if case['case'] == 'supernet_path')
            rows.append(_goal(8, 'supernet step / OneShot-S+ subnet step, same path', '<= 1.25x',
                              value, value <= 1.25, '%.3fx'))
        elif name == 'predictor':
            # the file keeps one entry per runtime / threads / size; ours is the default one
            summary = found['onnxruntime_t1_in224']['predictor']['summary']['table']
            mean, worst = summary['mean_abs_rel_error'], summary['max_abs_rel_error']
            rows.append(_goal(7, 'latency predictor, mean absolute error, 20 subnets, ORT', '<= 10 %',
                              mean, mean <= 0.10, '%.1f %%', 100))
            rows.append(_goal(7, 'latency predictor, largest absolute error, 20 subnets, ORT', '<= 20 %',
                              worst, worst <= 0.20, '%.1f %%', 100))
        elif name == 'search':
            genetic, random = found['genetic_mean_best_top1'], found['random_mean_best_top1']
            rows.append({'issue': 9, 'goal': 'genetic vs random search, best top-1 at equal '
                                             'evaluations, mean of 3 seeds',
                         'target': 'genetic better',
                         'value': '%.2f %% vs %.2f %%' % (100 * genetic, 100 * random),
                         'met': bool(genetic > random)})
            recal = found['bn_recalibration']
            rows.append({'issue': 9, 'goal': 'BN recalibration, mean top-1 of 20 sampled subnets',
                         'target': '-', 'value': '%.2f %% with, %.2f %% without' % (
                             100 * recal['mean_with'], 100 * recal['mean_without']), 'met': None})
            rows.append({'issue': 9, 'goal': 'candidate evaluations per minute (digits)',
                         'target': '-', 'value': '%.1f' % found['evaluations_per_minute'],
                         'met': None})
    return rows


def _goal(issue, goal, target, value, met, form, scale=1):
    text = form.format(value * scale) if '{' in form else form % (value * scale)
    return {'issue': issue, 'goal': goal, 'target': target, 'value': text, 'raw': value,
            'met': bool(met)}


def markdown(results):
    table, peak = results['deployment'], results['deployment']['gemm_peak']
    host = table['machine']
    lines = ['### Benchmarks of record (`python bench/run_all.py`)', '',
             '%s, %d threads, input %d; load average %s at the start, %s after the table. '
             'float32 GEMM peak %.1f GFLOPS (numpy %.1f / MXNet %.1f before, %.1f / %.1f after). '
             'Latency: median ms at batch 1 (p90 in the JSON); throughput: images/s at batch 32; '
             'GFLOPS at batch 32 as a share of the peak.'
             % (host['cpu'], THREADS, table['input_size'], host['load_average'],
                host['load_average_after'], peak['gflops'], peak['before']['numpy'],
                peak['before']['mxnet'], peak['after']['numpy'], peak['after']['mxnet']), '',
             '#### Goals', '', '| issue | goal | target | reached | met |', '|---|---|---|---|---|']
    for row in results['goals']:
        verdict = ('failed to run' if row.get('failed') else
                   {True: '**met**', False: '**not met**', None: '-'}[row['met']])
        lines.append('| #%s | %s | %s | %s | %s |' % (row['issue'], row['goal'], row['target'],
                                                    row['value'], verdict))
    lines += ['', '#### Deployment, batch 1 latency (ms) / batch 32 throughput (img/s)', '',
              '| model | MMACs | params | MicroNet (32 bit / ORT INT8) | '
              + ' | '.join(RUNTIME_LABELS[r] for r in RUNTIMES) + ' |',
              '|---|---|---|---|' + '---|' * len(RUNTIMES)]
    for name, entry in table['models'].items():
        cells = ['%.2f / %.0f' % (entry[r]['b1']['median_ms'], entry[r]['images_per_s'])
                 for r in RUNTIMES]
        lines.append('| %s | %.1f | %.2fM | %.3f / %.3f | %s |' % (
            name, entry['macs'] / 1e6, entry['params'] / 1e6, entry['micronet_fp32'],
            entry['micronet_ort_int8'], ' | '.join(cells)))
    lines += ['', '#### Achieved GFLOPS at batch 32 (share of the %.0f GFLOPS float32 GEMM peak)'
              % peak['gflops'], '',
              '| model | ' + ' | '.join(RUNTIME_LABELS[r] for r in RUNTIMES)
              + ' | INT8 convs (ORT / MXNet) |', '|---|' + '---|' * (len(RUNTIMES) + 1)]
    for name, entry in table['models'].items():
        lines.append('| %s | %s | %s / %s |' % (
            name, ' | '.join('%.1f (%.0f %%)' % (entry[r]['gflops'], 100 * entry[r]['peak_share'])
                             for r in RUNTIMES),
            entry['int8_convs']['ort_int8'], entry['int8_convs']['mxnet_int8']))
    return '\n'.join(lines) + '\n'


def quote_in_readme(text, readme=README):
    """Put ``text`` between the README's bench markers (the README quotes the run of record)."""
    with open(readme) as handle:
        content = handle.read()
    before, start, rest = content.partition(QUOTE_START)
    _, end, after = rest.partition(QUOTE_END)
    if not start or not end:
        raise SystemExit('%s lacks the markers %s ... %s' % (readme, QUOTE_START, QUOTE_END))
    write_text(readme, before + start + '\n' + text + end + after)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=50, help='timed runs at batch 1')
    parser.add_argument('--runs32', type=int, default=10, help='timed runs at batch 32')
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--calib-images', type=int, default=32)
    parser.add_argument('--skip', nargs='*', default=[], choices=sorted(CHILDREN),
                        help='child benchmarks to leave out')
    parser.add_argument('--out', default=os.path.join(HERE, 'results'),
                        help='writes OUT.json and OUT.md')
    parser.add_argument('--no-readme', action='store_true',
                        help='do not quote the tables in README.md')
    args = parser.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix='bench-all-') as folder:
        table = deployment_table(args.models, args.input_size, args.runs, args.runs32,
                                 args.calib_images, folder)
        write_json(args.out + '.json', {'deployment': table}, indent=2)  # kept if a child fails
        children = run_children([name for name in CHILDREN if name not in args.skip], folder)
    results = {'deployment': table, 'children': children, 'seconds': round(time.time() - start)}
    results['goals'] = goals(table, children)
    text = markdown(results)
    write_json(args.out + '.json', results, indent=2)
    write_text(args.out + '.md', text)
    if not args.no_readme:
        quote_in_readme(text)
    print(text)
    print('wrote %s.json and %s.md in %.0f s' % (args.out, args.out, time.time() - start))


if __name__ == '__main__':
    main()
