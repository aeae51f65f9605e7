"""INT8 vs FP32 latency of OneShot-S+ at 224x224, 2 threads, batch 1 and 32 (issue 6).

onnxruntime: the BN-merged FP32 export vs static INT8 in several formats (u8s8 / s8s8, QDQ /
QOperator, first conv and classifier FP32 or not), so that the defaults are chosen by
measurement. MXNet: the merged FP32 network (plain, and with MKL-DNN operator fusion) vs
``quantize_mxnet``. FP32 and INT8 runs are interleaved, so that load from other processes hits
both alike; times are medians of ``--runs`` timed runs after warm-up, speed-ups are medians of
the per-round ratios. An onnxruntime profile of the FP32 and the fastest INT8 model at the
largest batch says which ops their time goes to. Weights are random (timing does not depend on
them); calibration uses real images (the embedded digits, upscaled). Writes
bench/results_int8.json.

    python bench/bench_int8.py [--runs 20] [--batches 1 32] [--threads 2]
"""
import argparse
import json
import os
import sys
import tempfile
import time

THREADS = 2
os.environ.setdefault('OMP_NUM_THREADS', str(THREADS))  # before MXNet starts its thread pool

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from export.merge_bn import merge_bn  # noqa: E402
from export.onnx import export_onnx  # noqa: E402
from quantization.calib import ArrayReader, open_reader  # noqa: E402
from quantization.mxnet_int8 import quantize_mxnet  # noqa: E402
from quantization.ort_int8 import quantize_ort  # noqa: E402
from zoo import get_model  # noqa: E402
from profiling.timing import cpu_model

MODEL, SIZE = 'oneshot_s_plus', 224
ORT_VARIANTS = {  # name: (activation_type, weight_type, quant_format, keep_first_last)
    'u8s8_qdq': ('uint8', 'int8', 'qdq', False),  # the defaults of quantize_ort
    'u8s8_qdq_fp32_ends': ('uint8', 'int8', 'qdq', True),
    's8s8_qdq': ('int8', 'int8', 'qdq', False),
    'u8s8_qoperator': ('uint8', 'int8', 'qoperator', False),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results_int8.json')


def interleaved_times(runners, runs, warmup=3):
    """Seconds per call of each runner over ``runs`` rounds, calls interleaved round-robin."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: np.array(values) for name, values in times.items()}


def summarize(times, baseline):
    """Median ms of each runner and, per runner, the median over rounds of baseline / runner time
    (paired within a round, so that load that changes between rounds cancels out)."""
    return ({name: 1e3 * float(np.median(values)) for name, values in times.items()},
            {name: float(np.median(times[baseline] / values)) for name, values in times.items()
             if name != baseline})


def ort_session(path, threads, profile_prefix=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def op_profile(path, feed, threads, folder, runs=5):
    """Share of kernel time per op type over ``runs`` runs of an onnxruntime session."""
    session = ort_session(path, threads, os.path.join(folder, 'profile'))
    for _ in range(runs):
        session.run(None, feed)
    with open(session.end_profiling()) as handle:
        events = json.load(handle)
    total, per_op = 0.0, {}
    for event in events:
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            op = event['args']['op_name']
            per_op[op] = per_op.get(op, 0.0) + event['dur']
            total += event['dur']
    return {op: {'ms_per_run': us / runs / 1e3, 'share': us / total}
            for op, us in sorted(per_op.items(), key=lambda item: -item[1])}


def bench_ort(net, batches, reader_batches, runs, threads, folder):
    results = {}
    for batch in batches:
        shape = (batch, 3, SIZE, SIZE)
        fp32 = os.path.join(folder, 'fp32_b%d.onnx' % batch)
        export_onnx(net, fp32, shape)
        feed = {'data': np.random.RandomState(0).randn(*shape).astype(np.float32)}
        runners, sizes, coverage = {}, {'fp32': os.path.getsize(fp32)}, {}
        sessions = {'fp32': ort_session(fp32, threads)}
        for name, (act, weight, fmt, keep) in ORT_VARIANTS.items():
            path = os.path.join(folder, '%s_b%d.onnx' % (name, batch))
            report = quantize_ort(fp32, path, ArrayReader(reader_batches), activation_type=act,
                                  weight_type=weight, quant_format=fmt, keep_first_last=keep)
            sessions[name] = ort_session(path, threads)
            sizes[name] = os.path.getsize(path)
            coverage[name] = '%d/%d' % (report.num_int8_convs, report.num_convs)
        for name, session in sessions.items():
            runners[name] = (lambda s: lambda: s.run(None, feed))(session)
        ms, speedup = summarize(interleaved_times(runners, runs), 'fp32')
        best = max(speedup, key=speedup.get)
        results[batch] = {'ms': ms, 'speedup_vs_fp32': speedup, 'fastest_int8': best,
                          'file_bytes': sizes, 'int8_convs': coverage}
        if batch == max(batches):
            results[batch]['profile'] = {
                name: op_profile(os.path.join(folder, '%s_b%d.onnx' % (name, batch))
                                 if name != 'fp32' else fp32, feed, threads, folder)
                for name in ['fp32', best]}
    return results


def bench_mxnet(net, batches, reader_batches, runs):
    qnet, report = quantize_mxnet(net, ArrayReader(reader_batches), (1, 3, SIZE, SIZE))
    merged = merge_bn(net, (1, 3, SIZE, SIZE))
    fused = merge_bn(net, (1, 3, SIZE, SIZE))
    merged.hybridize(static_alloc=True, static_shape=True)
    fused.hybridize(backend='MKLDNN', static_alloc=True, static_shape=True)
    qnet.hybridize(static_alloc=True, static_shape=True)
    blocks = {'fp32': merged, 'fp32_mkldnn_fused': fused, 'int8': qnet}
    results = {'int8_convs': '%d/%d' % (report.num_int8_convs, report.num_convs),
               'fp32_layers': report.fp32_layers(), 'ops': report.ops,
               'conversions': report.conversions}
    for batch in batches:
        data = mx.nd.array(np.random.RandomState(0).randn(batch, 3, SIZE, SIZE))
        runners = {name: (lambda b: lambda: b(data).wait_to_read())(block)
                   for name, block in blocks.items()}
        times = interleaved_times(runners, runs)
        ms, _ = summarize(times, 'fp32')
        best_fp32 = min(('fp32', 'fp32_mkldnn_fused'), key=ms.get)
        results[batch] = {'ms': ms, 'best_fp32': best_fp32,
                          'speedup_vs_best_fp32': summarize(times, best_fp32)[1]['int8']}
    return results


def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as handle:
            flags = next(line for line in handle if line.startswith('flags')).split()
    except (OSError, StopIteration):
        return []
    return sorted(flag for flag in flags if 'vnni' in flag or flag.startswith('amx'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--threads', type=int, default=THREADS)
    parser.add_argument('--calib-images', type=int, default=32)
    parser.add_argument('--skip', choices=['mxnet', 'onnxruntime'])
    args = parser.parse_args()
    net = get_model(MODEL)
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    reader = open_reader('digits', SIZE, num_images=args.calib_images)
    calib = reader.batches
    result = {'model': MODEL, 'input_size': SIZE, 'threads': args.threads, 'runs': args.runs,
              'cpu': cpu_model(), 'cpu_int8_flags': _cpu_flags(),
              'load_average_at_start': os.getloadavg(),
              'onnxruntime': ort.__version__, 'mxnet': mx.__version__}
    with tempfile.TemporaryDirectory(prefix='bench-int8-') as folder:
        if args.skip != 'onnxruntime':
            result['onnxruntime_results'] = bench_ort(merge_bn(net, (1, 3, SIZE, SIZE)),
                                                      args.batches, calib, args.runs,
                                                      args.threads, folder)
        if args.skip != 'mxnet':
            result['mxnet_results'] = bench_mxnet(net, args.batches, calib, args.runs)
    result['load_average_at_end'] = os.getloadavg()
    with open(RESULTS, 'w') as handle:
        json.dump(result, handle, indent=2)
    _print(result)


def _print(result):
    print('%s at %d, %d threads, median of %d runs, %s'
          % (result['model'], result['input_size'], result['threads'], result['runs'],
             result['cpu']))
    for batch, row in result.get('onnxruntime_results', {}).items():
        print('onnxruntime batch %-3s ' % batch + '  '.join(
            '%s %.1f ms' % (name, ms) for name, ms in row['ms'].items())
            + '  | best int8 %s: %.2fx' % (row['fastest_int8'],
                                            row['speedup_vs_fp32'][row['fastest_int8']]))
    mx_rows = result.get('mxnet_results', {})
    for batch, row in mx_rows.items():
        if isinstance(row, dict) and 'ms' in row:
            print('mxnet       batch %-3s ' % batch + '  '.join(
                '%s %.1f ms' % (name, ms) for name, ms in row['ms'].items())
                + '  | int8 vs best fp32: %.2fx' % row['speedup_vs_best_fp32'])
    print('wrote %s' % RESULTS)


if __name__ == '__main__':
    main()
