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
import collections
import json
import os
import sys
import tempfile
import time

THREADS = 2
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ[_var] = str(THREADS)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from export.merge_bn import merge_bn  # noqa: E402
from export.onnx import export_onnx  # noqa: E402
from nas.counting import count_net  # noqa: E402
from profiling.timing import cpu_model

MODELS = ('oneshot_s_plus', 'mobilenetv3_large', 'mobilenetv2_1.0')
SIZE = 224
# (shuffle form, channel block): the naive export first, the shipped default last
FORMS = {'naive (reshape/transpose)': ('reshape', None), 'gather': ('gather', None),
         'slices': ('slices', None), 'reshape + padding': ('reshape', 16),
         'gather + padding': ('gather', 16), 'slices + padding (default)': ('slices', 16)}
GOAL_RATIO, GOAL_PEAK_FRACTION, GOAL_MXNET_SPEEDUP = 1.3, 0.40, 1.5


def _stats(seconds):
    ms = np.asarray(seconds) * 1e3
    return {'median_ms': round(float(np.median(ms)), 3),
            'p90_ms': round(float(np.percentile(ms, 90)), 3), 'runs': len(ms)}


def _time(func, runs, warmup=3):
    for _ in range(warmup):
        func()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        seconds.append(time.perf_counter() - start)
    return _stats(seconds)


def _gemm_peak(n=4096, repeats=5):
    """Best float32 GEMM rate on THREADS threads, numpy and MXNet (2 n^3 flops per product)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
    numpy_best = min(_time(lambda: a @ b, repeats, 1)['median_ms'] for _ in range(2))
    ma, mb = mx.nd.array(a), mx.nd.array(b)
    mxnet_best = _time(lambda: mx.nd.dot(ma, mb).wait_to_read(), repeats, 1)['median_ms']
    return {'numpy_gflops': round(2 * n ** 3 / numpy_best / 1e6, 1),
            'mxnet_gflops': round(2 * n ** 3 / mxnet_best / 1e6, 1), 'n': n}


def _build(name):
    """The net with unit-scale random weights, and its multiply-accumulates per image."""
    from zoo import resolve_model
    net, _ = resolve_model(name)
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))  # gluoncv layers infer their shapes on the first call
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2),
                   force_reinit=True)
    rng = np.random.RandomState(0)
    for pname, param in net.collect_params().items():
        if pname.endswith('running_var'):
            param.set_data(mx.nd.array(rng.rand(*param.shape) + 0.5))
        elif pname.endswith('running_mean') or pname.endswith('beta'):
            param.set_data(mx.nd.array(rng.randn(*param.shape) * 0.1))
        elif pname.endswith('gamma'):
            param.set_data(mx.nd.array(rng.rand(*param.shape) + 0.5))
    macs = count_net(net, (1, 3, SIZE, SIZE)).flops
    return net, macs


def _ort_session(path, profile=False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_profiling = profile
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _interleaved(funcs, runs, rounds=5, warmup=2):
    """Latency stats of each ``funcs[key]``, timed in alternating chunks of ``runs / rounds``
    calls: a load change on this shared machine then hits every candidate alike."""
    for func in funcs.values():
        for _ in range(warmup):
            func()
    seconds = {key: [] for key in funcs}
    chunk = max(1, runs // rounds)
    while min(len(v) for v in seconds.values()) < runs:
        for key, func in funcs.items():
            for _ in range(min(chunk, runs - len(seconds[key]))):
                start = time.perf_counter()
                func()
                seconds[key].append(time.perf_counter() - start)
    return {key: _stats(values) for key, values in seconds.items()}


def _ort_runner(path, batch):
    session = _ort_session(path)
    x = np.random.default_rng(0).normal(size=(batch, 3, SIZE, SIZE)).astype(np.float32)
    return lambda: session.run(None, {'data': x})


def _ort_profile(path, batch, runs):
    """Kernel time per op type (ms per inference, share), layout reorders included."""
    session = _ort_session(path, profile=True)
    x = np.random.default_rng(0).normal(size=(batch, 3, SIZE, SIZE)).astype(np.float32)
    for _ in range(runs):
        session.run(None, {'data': x})
    trace_path = session.end_profiling()
    with open(trace_path) as handle:
        events = json.load(handle)
    os.remove(trace_path)
    per_op = collections.Counter()
    for event in events:
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            per_op[event['args'].get('op_name')] += event['dur']
    total = sum(per_op.values())
    return {op: {'ms': round(us / runs / 1e3, 3), 'share': round(us / total, 3)}
            for op, us in per_op.most_common()}


def _mxnet_variants(net, shape):
    """Plain hybridized; merged BN + oneDNN (MKLDNN) fusion; hybridized + oneDNN fusion."""
    x = mx.nd.zeros(shape)
    plain = net
    plain.hybridize(static_alloc=True, static_shape=True)
    plain(x)
    merged = merge_bn(net, shape)
    merged.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
    fused = _fresh_copy(net, shape)
    fused.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
    return {'hybridized': plain, 'merged_bn+onednn': merged, 'hybridized+onednn': fused}


def _fresh_copy(net, shape):
    """A SymbolBlock of the same graph and weights (optimize_for rewrites the block it is given)."""
    from export.mxnet_symbol import symbol_block, trace
    sym, params = trace(net, shape)
    return symbol_block(sym, {k: v.asnumpy() for k, v in params.items()})


def _mxnet_runner(block, batch):
    x = mx.nd.random.normal(shape=(batch, 3, SIZE, SIZE))
    return lambda: block(x).wait_to_read()


def run(runs, runs32, folder):
    results = {'machine': {'cpu': cpu_model(), 'threads': THREADS,
                           'load_average_before': [round(v, 2) for v in os.getloadavg()]},
               'models': {}, 'forms': {}, 'profile': {}}
    peak_before = _gemm_peak()
    paths, forms = {}, {}
    for name in MODELS:
        net, macs = _build(name)
        merged = merge_bn(net, (1, 3, SIZE, SIZE))
        paths[name] = os.path.join(folder, name + '.onnx')
        export_onnx(merged, paths[name], (1, 3, SIZE, SIZE), opset=13, dynamic_batch=True,
                    channel_block=16)  # what nas-export writes
        results['models'][name] = {'macs': macs, 'onnxruntime': {}, 'mxnet': {}}
        for batch, count in (('b1', runs), ('b32', runs32)):
            shape = (int(batch[1:]), 3, SIZE, SIZE)
            timed = _interleaved({kind: _mxnet_runner(block, shape[0]) for kind, block
                                  in _mxnet_variants(net, shape).items()}, count)
            for kind, stats in timed.items():
                results['models'][name]['mxnet'].setdefault(kind, {})[batch] = stats
            print(name, batch, 'MXNet', timed, flush=True)
        if name == 'oneshot_s_plus':
            for label, (form, block) in FORMS.items():
                forms[label] = os.path.join(folder, 'form%d.onnx' % len(forms))
                export_onnx(merged, forms[label], (1, 3, SIZE, SIZE), opset=13,
                            dynamic_batch=True, shuffle=form, channel_block=block)
    for batch, count in (('b1', runs), ('b32', runs32)):  # every onnxruntime graph, interleaved
        candidates = dict(paths, **{'form: ' + k: v for k, v in forms.items()})
        timed = _interleaved({key: _ort_runner(path, int(batch[1:]))
                              for key, path in candidates.items()}, count)
        for key, stats in timed.items():
            if key.startswith('form: '):
                results['forms'].setdefault(key[6:], {})[batch] = stats
            else:
                results['models'][key]['onnxruntime'][batch] = stats
        print('onnxruntime', batch, timed, flush=True)
    for name in ('oneshot_s_plus', 'mobilenetv3_large'):
        results['profile'][name] = {'b1': _ort_profile(paths[name], 1, 20),
                                    'b32': _ort_profile(paths[name], 32, 3)}
    peak_after = _gemm_peak()
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
    best_peak = max(peak['numpy_gflops'], peak['mxnet_gflops'])
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
             % (machine['cpu'], machine['threads'], machine['load_average_before'],
                machine['load_average_after'], peak['numpy_gflops'], peak['mxnet_gflops']), '',
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
