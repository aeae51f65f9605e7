"""The benchmark of record: one command, one run, one machine; writes bench/results.json and
bench/results.md (the table the README quotes).

1. Deployment table. OneShot-S+, OneShot+ and OneShot beside gluoncv mobilenetv3_large,
   mobilenetv2_1.0 and resnet18_v1, input 224, 2 threads: MACs, params, MicroNet score (32 bit,
   and of the onnxruntime INT8 graph at its own bit widths), latency at batch 1 and throughput at
   batch 32 on six runtimes (MXNet hybridized, MXNet merged BN + oneDNN fusion, the MXNet
   deployment graph of ``nas-export --mxnet``, onnxruntime FP32, onnxruntime INT8 static QDQ U8S8,
   MXNet INT8 oneDNN from the deployment graph), the GFLOPS each reaches at batch 32 against this
   machine's float32 GEMM peak (a 4096^3 product, before and after, best kept), and the INT8
   graphs by op type. Every graph is written to a file and timed in a worker process that loads
   one runtime only (``profiling.timing.measure_models``), so no runtime's spinning threads
   steal the cores from the next; the MXNet and the onnxruntime worker take turns over
   ``--rounds`` rounds, figures are medians over rounds and ratios medians of per-round ratios.
   Weights are random with unit-scale activations (speed does not depend on their values); INT8
   calibration uses the embedded digits.
2. The other issues' benchmarks, each run here as a child process (``--skip`` leaves one out):
   counting (bench_counting.py), training step (bench_train.py), latency predictor
   (bench_latency_predictor.py, with a table measured in this run), search (bench_search.py),
   latency-limited search (bench_latency_search.py) and what hard-swish costs the INT8 graphs
   (bench_hard_swish.py).
3. Every goal the issues set, with the value reached and met / not met (and, beside #14's INT8
   goals, the speed-ups with hard-swish as one operator and without it).

The tables are also quoted in README.md, between its bench markers (``--no-readme``: not).

    python bench/run_all.py [--runs 50] [--runs32 30] [--skip search ...] [--out bench/results]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import (THREADS, gemm_peak, machine, measure_in_workers, ort_op_profile,
                    round_ratio, round_stats, unit_scale_net, write_mxnet_graphs)
from bench_latency_predictor import parse_target  # noqa: E402  (after common, as below)
from export.merge_bn import merge_bn  # noqa: E402  (after common: it pins the threads)
from export.onnx import ONNX_CHANNEL_BLOCK, export_onnx  # noqa: E402
from nas.atomic import write_json, write_text  # noqa: E402
from profiling.deploy import write_probe  # noqa: E402
from profiling.scores import micronet_score  # noqa: E402
from profiling.zoo_page import GLUONCV_PEERS  # noqa: E402
from quantization.calib import ArrayReader, open_reader  # noqa: E402
from quantization.mxnet_int8 import quantize_mxnet, save_mxnet_int8  # noqa: E402
from quantization.ort_int8 import quantize_ort  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIMES = ('mxnet', 'mxnet_merged_bn', 'mxnet_deploy', 'ort_fp32', 'ort_int8', 'mxnet_int8')
RUNTIME_LABELS = {'mxnet': 'MXNet', 'mxnet_merged_bn': 'MXNet merged BN + oneDNN',
                  'mxnet_deploy': 'MXNet deployment graph', 'ort_fp32': 'ORT FP32',
                  'ort_int8': 'ORT INT8', 'mxnet_int8': 'MXNet INT8'}
ENGINE = {'ort_fp32': 'onnxruntime', 'ort_int8': 'onnxruntime'}  # the others run in MXNet
DEPLOYED = ('oneshot_s_plus', 'oneshot_plus', 'oneshot')  # #14's goals are set for these
MODELS = DEPLOYED + tuple(GLUONCV_PEERS)  # the peers the zoo page shows too
BATCHES = (1, 32)
README = os.path.join(os.path.dirname(HERE), 'README.md')
QUOTE_START, QUOTE_END = '<!-- bench/results.md -->', '<!-- end of bench/results.md -->'
# child benchmark: (script, extra arguments, results file)
CHILDREN = {
    'counting': ('bench_counting.py', [], 'results_counting.json'),
    'train': ('bench_train.py', [], 'results_train.json'),
    'predictor': ('bench_latency_predictor.py', [], 'results_latency.json'),
    'search': ('bench_search.py', [], 'results_search.json'),
    'latency_search': ('bench_latency_search.py', [], 'results_latency_search.json'),
    'hard_swish': ('bench_hard_swish.py', [], 'results_hard_swish.json'),
}


def say(message):
    print(message, flush=True)


def prepare(name, size, calib, folder):
    """Counts, MicroNet scores, and every runtime's graph of one model written to ``folder``
    (the timing workers load files); INT8 op breakdowns."""
    net, counts = unit_scale_net(name, size)
    shape = (1, 3, size, size)
    base = os.path.join(folder, name)
    fp32, int8 = base + '.onnx', base + '.int8.onnx'
    export_onnx(merge_bn(net, shape), fp32, shape, opset=13, dynamic_batch=True,
                channel_block=ONNX_CHANNEL_BLOCK)  # what nas-export writes
    ort_report = quantize_ort(fp32, int8, ArrayReader(calib))
    qnet, mx_report = quantize_mxnet(net, ArrayReader(calib), shape)
    save_mxnet_int8(qnet, base + '_int8', mx_report)
    files = dict(write_mxnet_graphs(net, shape, base), ort_fp32=fp32, ort_int8=int8,
                 mxnet_int8=base + '_int8')
    entry = {'macs': counts.flops, 'params': counts.params,
             'micronet_fp32': round(micronet_score(net, shape, bits=32).score, 4),
             'micronet_ort_int8': round(micronet_score(int8).score, 4),
             'int8_convs': {'ort_int8': '%d/%d' % (ort_report.num_int8_convs, ort_report.num_convs),
                            'mxnet_int8': '%d/%d' % (mx_report.num_int8_convs,
                                                     mx_report.num_convs)},
             'int8_conv_share': {'ort_int8': ort_report.num_int8_convs / ort_report.num_convs,
                                 'mxnet_int8': mx_report.num_int8_convs / mx_report.num_convs},
             'int8_ops': {'ort_int8_b1': ort_op_profile(int8, shape, 20, folder),
                          'mxnet_int8': {'ops': mx_report.ops,
                                         'conversions': mx_report.conversions}},
             'file_bytes': {'ort_fp32': os.path.getsize(fp32), 'ort_int8': os.path.getsize(int8)}}
    return entry, files


def deployment_table(models, size, runs, runs32, calib_images, folder, rounds=2, gemm_size=4096,
                     progress=say):
    """Each runtime is timed in its own worker process, the runtimes taking turns ``rounds``
    times; figures are medians over rounds, ratios medians of per-round ratios."""
    calib = open_reader('digits', size, num_images=calib_images).batches
    result = {'machine': machine(), 'input_size': size, 'models': {}, 'paired': {},
              'timing': 'one worker process per runtime (profiling.timing.measure_models), '
                        '%d rounds' % rounds}
    peaks = [gemm_peak(gemm_size)]
    files = {}
    for name in models:
        start = time.time()
        result['models'][name], files[name] = prepare(name, size, calib, folder)
        progress('prepared %s in %.0f s' % (name, time.time() - start))
    probes = {engine: write_probe(engine, folder) for engine in ('mxnet', 'onnxruntime')}
    graphs = {(name, runtime): (ENGINE.get(runtime, 'mxnet'), path)
              for name in models for runtime, path in files[name].items()}
    for batch, count in zip(BATCHES, (runs, runs32)):
        start = time.time()
        found = measure_in_workers(graphs, (batch, 3, size, size), count, rounds, probes)
        progress('timed %d graphs at batch %d in %.0f s' % (len(graphs), batch,
                                                             time.time() - start))
        for (name, runtime), timings in found.items():
            result['models'][name].setdefault(runtime, {})['b%d' % batch] = round_stats(timings)
        result['paired']['b%d' % batch] = _paired(found, models)
    peaks.append(gemm_peak(gemm_size))
    result['gemm_peak'] = {'gflops': max(max(peak.values()) for peak in peaks),
                           'before': peaks[0], 'after': peaks[1]}
    _throughput(result)
    result['machine']['load_average_after'] = [round(v, 2) for v in os.getloadavg()]
    return result


def _paired(found, models):
    """The ratios the goals need (time of the first over time of the second), per round."""
    pairs = {'ort_int8_speedup': ('ort_fp32', 'ort_int8'),
             'mxnet_int8_speedup': ('mxnet_merged_bn', 'mxnet_int8'),
             'mxnet_int8_vs_deploy': ('mxnet_deploy', 'mxnet_int8'),
             'mxnet_merged_bn_speedup': ('mxnet', 'mxnet_merged_bn'),
             'mxnet_deploy_speedup': ('mxnet_merged_bn', 'mxnet_deploy'),
             'ort_fp32_vs_mxnet_deploy': ('ort_fp32', 'mxnet_deploy')}
    ratios = {name: {key: round_ratio(found, (name, a), (name, b))
                     for key, (a, b) in pairs.items()} for name in models}
    if 'oneshot_s_plus' in models and 'mobilenetv3_large' in models:
        ratios['oneshot_s_plus_vs_mobilenetv3_large_ort'] = round_ratio(
            found, ('oneshot_s_plus', 'ort_fp32'), ('mobilenetv3_large', 'ort_fp32'))
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
    rows += _deployment_goals(paired, models)
    rows += _child_goals(children)
    return rows


def _deployment_goals(paired, models):
    """Issue #14: the MXNet deployment graph against onnxruntime, and the INT8 speed-ups."""
    rows = []
    for name in (n for n in DEPLOYED if n in models):
        value = 1 / paired['b1'][name]['ort_fp32_vs_mxnet_deploy']
        rows.append(_goal(14, '%s MXNet deployment graph latency / ORT FP32, batch 1' % name,
                          '<= 2x', value, value <= 2, '%.2fx'))
        value = paired['b32'][name]['ort_fp32_vs_mxnet_deploy']
        rows.append(_goal(14, '%s MXNet deployment graph throughput / ORT FP32, batch 32' % name,
                          '>= 0.6x', value, value >= 0.6, '%.2fx'))
    if 'oneshot_s_plus' in models:
        for batch, target in (('b1', 1.0), ('b32', 1.5)):
            value = paired[batch]['oneshot_s_plus']['mxnet_int8_vs_deploy']
            rows.append(_goal(14, 'OneShot-S+ MXNet INT8 vs MXNet deployment graph, batch %s'
                              % batch[1:], ('> 1x' if batch == 'b1' else '>= 1.5x'), value,
                              value > target if batch == 'b1' else value >= target, '%.2fx'))
        share = models['oneshot_s_plus']['int8_conv_share']['mxnet_int8']
        rows.append(_goal(14, 'OneShot-S+ MXNet INT8, share of convs in INT8', '>= 95 %', share,
                          share >= 0.95, '%.0f %%', 100))
        for batch, target in (('b1', 1.8), ('b32', 2.4)):
            value = paired[batch]['oneshot_s_plus']['ort_int8_speedup']
            rows.append(_goal(14, 'OneShot-S+ ORT INT8 speed-up over FP32, batch %s' % batch[1:],
                              '>= %.1fx' % target, value, value >= target, '%.2fx'))
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
            bf16 = found['bfloat16']
            rows.append({'issue': 16, 'goal': 'bfloat16 vs float32 training step, OneShot-S+ subnet',
                         'target': '-', 'value': '%.0f ms vs %.0f ms (%.2fx)' % (
                             bf16['step_ms_bfloat16'], bf16['step_ms_float32'], bf16['speedup']),
                         'met': None})
        elif name == 'predictor':
            rows += _predictor_goals(found)
        elif name == 'latency_search':
            rows += _latency_search_goals(found)
        elif name == 'hard_swish':
            rows += _hard_swish_rows(found)
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


def _predictor_goals(found):
    """Issue #15: held-out subnets against the rescaled, corrected table prediction, beside
    the noise floor (the same subnet measured twice), and the drift test."""
    rows = []
    # the issue sets no bound at batch 32 (onnxruntime:fp32:b32): reported beside the others
    bounds = {'onnxruntime:fp32': 0.9, 'onnxruntime:int8': 0.8, 'mxnet:fp32': 0.8}
    for target, result in found['runtimes'].items():
        best, noise = result['errors']['rescaled_corrected'], result['noise_floor']['mean_abs']
        runtime, precision, batch_size = parse_target(target)
        label = ('%s:%s, batch %d, %d held-out subnets (noise floor %.1f %%; %d of %d groups '
                 'timed again)' % (runtime, precision, batch_size, result['samples'],
                                   100 * noise, result['retimed_groups'], result['groups']))
        goal = 'latency predictor within +-10 %%, %s' % label
        if target not in bounds:
            rows.append({'issue': 15, 'goal': goal, 'target': '-', 'met': None,
                         'value': '%.0f %%' % (100 * best['within_10'])})
            continue
        rows.append(_goal(15, goal, '>= %.0f %%' % (100 * bounds[target]), best['within_10'],
                          best['within_10'] >= bounds[target], '%.0f %%', 100))
        if target == 'onnxruntime:fp32':
            rows.append(_goal(15, 'latency predictor mean error, %s' % label, '<= 5 %',
                              best['mean_abs'], best['mean_abs'] <= 0.05, '%.1f %%', 100))
    if 'drift' in found:  # the same bounds as onnxruntime FP32's, which the drift test uses
        drift = found['drift']
        rescaled, unrescaled = drift['rescaled'], drift['unrescaled']
        value = (rescaled['within_10'], unrescaled['within_10'])
        rows.append({'issue': 15, 'goal': 'under an induced load (probe %.2f -> %.2f ms): share '
                                          'within +-10 %% (mean error), rescaled vs unrescaled'
                                          % (drift['probe_ms_table'], drift['probe_ms_loaded']),
                     'target': '>= 90 %, <= 5 % vs below', 'raw': value,
                     'value': '%.0f %% (%.1f %%) vs %.0f %% (%.1f %%)' % (
                         100 * value[0], 100 * rescaled['mean_abs'], 100 * value[1],
                         100 * unrescaled['mean_abs']),
                     'met': bool(value[0] >= 0.9 and rescaled['mean_abs'] <= 0.05
                                 and value[1] < 0.9)})
    return rows


def _latency_search_goals(found):
    """Issue #15: the top-k winners of a latency-limited search, measured against the limit
    within the noise floor (the same winner measured twice), one row per space."""
    rows = []
    for name, result in found['spaces'].items():
        score = result['winners_score']
        rows.append(_goal(15, '%s: latency-limited winners under the limit (%.3f ms) within the '
                              'noise floor (%.1f %%), %d winners, predicted/measured %.2f' % (
                                  name, result['limit_ms'], 100 * result['noise_floor']['mean_abs'],
                                  score['count'], score['predicted_over_measured']['mean']),
                          '>= 95 %', score['under_limit_within_noise'],
                          score['under_limit_within_noise'] >= 0.95, '%.0f %%', 100))
        near = result.get('near_limit_score')
        if near:
            rows.append({'issue': 15, 'goal': '%s: the %d legal candidates predicted closest to '
                                              'the limit, under it within the noise floor (at '
                                              'the limit scaled by the probe drift since the '
                                              'search)' % (name, near['count']),
                         'target': '-', 'met': None, 'value': '%.0f %% (%.0f %%)' % (
                             100 * near['under_limit_within_noise'],
                             100 * near['under_drifted_limit_within_noise'])})
    return rows


def _hard_swish_rows(found):
    """Issue #14: the INT8 speed-ups with hard-swish as it runs, as one operator and without it
    (timing stand-ins, ``bench_hard_swish.py``), beside the goals they bound."""
    rows = []
    for runtime, label, targets in (
            ('ort_int8', 'ORT INT8 over ORT FP32', ('>= 1.8x', '>= 2.4x')),
            ('mxnet_int8', 'MXNet INT8 over the MXNet deployment graph', ('> 1x', '>= 1.5x'))):
        for batch, target in zip(('b1', 'b32'), targets):
            speedups = found['batches'][batch]['speedup_over_fp32']
            rows.append({'issue': 14, 'goal': 'OneShot-S+ %s, batch %s, hard-swish as it runs / '
                                              'as one operator / without it' % (label, batch[1:]),
                         'target': 'goal %s' % target, 'met': None,
                         'value': ' / '.join('%.2fx' % speedups['%s/%s' % (runtime, variant)]
                                             for variant in ('real', 'one_op', 'none'))})
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
    lines += _int8_ops_markdown(table['models'])
    return '\n'.join(lines) + '\n'


def _int8_ops_markdown(models, top=8):
    """Where the INT8 graphs spend their time (ORT, batch 1) and what MXNet left FP32."""
    lines = ['', '#### INT8 graphs by op type: ORT INT8 batch 1 kernel ms (share), '
                 'MXNet INT8 operators int8 / fp32 and quantize-dequantize conversions', '',
             '| model | ORT INT8, top %d op types | MXNet INT8 |' % top, '|---|---|---|']
    for name, entry in models.items():
        ort = entry['int8_ops']['ort_int8_b1']
        mxnet = entry['int8_ops']['mxnet_int8']
        lines.append('| %s | %s | %s; %d conversions |' % (
            name, ', '.join('%s %.2f (%.0f %%)' % (op, v['ms'], 100 * v['share'])
                            for op, v in list(ort.items())[:top]),
            ', '.join('%s %d/%d' % (op, c.get('int8', 0), c.get('fp32', 0))
                      for op, c in sorted(mxnet['ops'].items())), mxnet['conversions']))
    return lines


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
    parser.add_argument('--runs32', type=int, default=30, help='timed runs at batch 32')
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--input-size', type=int, default=224)
    parser.add_argument('--calib-images', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=2,
                        help='turns each runtime worker takes (runs are split over them)')
    parser.add_argument('--gemm-size', type=int, default=4096,
                        help='n of the n x n float32 product that measures the GEMM peak')
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
                                 args.calib_images, folder, args.rounds, args.gemm_size)
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
