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
import tempfile

from common import (THREADS, interleaved, machine, mxnet_runner, ort_op_profile, ort_runner,
                    paired_ratio, unit_scale_net)
import mxnet as mx  # noqa: E402  (after common: it pins the threads)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from export.merge_bn import merge_bn  # noqa: E402
from export.onnx import export_onnx  # noqa: E402
from quantization.calib import ArrayReader, open_reader  # noqa: E402
from quantization.mxnet_int8 import quantize_mxnet  # noqa: E402
from quantization.ort_int8 import quantize_ort  # noqa: E402

MODEL, SIZE = 'oneshot_s_plus', 224
ORT_VARIANTS = {  # name: (activation_type, weight_type, quant_format, keep_first_last)
    'u8s8_qdq': ('uint8', 'int8', 'qdq', False),  # the defaults of quantize_ort
    'u8s8_qdq_fp32_ends': ('uint8', 'int8', 'qdq', True),
    's8s8_qdq': ('int8', 'int8', 'qdq', False),
    'u8s8_qoperator': ('uint8', 'int8', 'qoperator', False),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results_int8.json')


def summarize(times, baseline):
    """Median ms of each runner and, per runner, the median over rounds of baseline / runner time
    (paired within a round, so that load that changes between rounds cancels out)."""
    return ({name: 1e3 * float(np.median(values)) for name, values in times.items()},
            {name: paired_ratio(times, baseline, name) for name in times if name != baseline})


def bench_ort(net, batches, reader_batches, runs, threads, folder):
    results = {}
    for batch in batches:
        shape = (batch, 3, SIZE, SIZE)
        fp32 = os.path.join(folder, 'fp32_b%d.onnx' % batch)
        export_onnx(net, fp32, shape)
        sizes, coverage = {'fp32': os.path.getsize(fp32)}, {}
        runners = {'fp32': ort_runner(fp32, shape, threads)}
        for name, (act, weight, fmt, keep) in ORT_VARIANTS.items():
            path = os.path.join(folder, '%s_b%d.onnx' % (name, batch))
            report = quantize_ort(fp32, path, ArrayReader(reader_batches), activation_type=act,
                                  weight_type=weight, quant_format=fmt, keep_first_last=keep)
            runners[name] = ort_runner(path, shape, threads)
            sizes[name] = os.path.getsize(path)
            coverage[name] = '%d/%d' % (report.num_int8_convs, report.num_convs)
        ms, speedup = summarize(interleaved(runners, runs), 'fp32')
        best = max(speedup, key=speedup.get)
        results[batch] = {'ms': ms, 'speedup_vs_fp32': speedup, 'fastest_int8': best,
                          'file_bytes': sizes, 'int8_convs': coverage}
        if batch == max(batches):
            results[batch]['profile'] = {
                name: ort_op_profile(os.path.join(folder, '%s_b%d.onnx' % (name, batch))
                                     if name != 'fp32' else fp32, shape, 5, folder, threads)
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
        runners = {name: mxnet_runner(block, (batch, 3, SIZE, SIZE))
                   for name, block in blocks.items()}
        times = interleaved(runners, runs)
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
    net, _ = unit_scale_net(MODEL, SIZE)
    reader = open_reader('digits', SIZE, num_images=args.calib_images)
    calib = reader.batches
    result = {'model': MODEL, 'input_size': SIZE, 'threads': args.threads, 'runs': args.runs,
              'cpu': machine()['cpu'], 'cpu_int8_flags': _cpu_flags(),
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
