"""What hard-swish costs OneShot-S+'s INT8 graphs, and the bound that puts on issue 14's goals.

Neither runtime has an int8 hard-swish. onnxruntime 1.20 runs it as an int8 add and an int8
multiply (``quantization.ort_rewrites``); MXNet 1.9.1 as ``hard_sigmoid`` and ``elemwise_mul`` in
FP32 between a dequantize and a quantize (``quantization.mxnet_int8``). To see how fast the INT8
graphs could be with a cheaper hard-swish, the same network (same weights, same calibration) is
quantized three times, hard-swish replaced by a timing stand-in that computes something else:

* ``one_op``: the least a hard-swish could cost in that runtime's own operators: one int8
  multiply ``x * x`` for onnxruntime (its cheapest int8 element-wise kernel that multiplies two
  tensors; its lookup-table kernels, which could hold any unary function, run slower), one FP32
  ``hard_sigmoid`` for MXNet (its two FP32 operators become one);
* ``none``: ReLU, which both runtimes fold into the convolution, so hard-swish costs nothing.

Speed-ups are over the real network's FP32 graph (onnxruntime FP32, the MXNet deployment graph),
as issue 14's goals are. The stand-ins are for timing only: they change the function. Each
runtime runs in its own worker process, the two taking turns (``common.measure_in_workers``).
Writes bench/results_hard_swish.json.

    python bench/bench_hard_swish.py [--runs 50] [--runs32 30] [--rounds 2]
"""
import argparse
import os
import tempfile
import time

from common import machine, measure_in_workers, round_ratio, round_stats, unit_scale_net

from export.deploy import export_deploy  # noqa: E402
from export.merge_bn import merge_bn  # noqa: E402
from export.onnx import ONNX_CHANNEL_BLOCK, export_onnx  # noqa: E402
from nas.atomic import write_json  # noqa: E402
from nas.blocks import HardSwish  # noqa: E402
from profiling.deploy import write_probe  # noqa: E402
from quantization.calib import ArrayReader, open_reader  # noqa: E402
from quantization.mxnet_int8 import quantize_mxnet, save_mxnet_int8  # noqa: E402
from quantization.ort_int8 import quantize_ort  # noqa: E402

MODEL, SIZE = 'oneshot_s_plus', 224
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results_hard_swish.json')


class _Square(HardSwish):
    """Timing stand-in: one element-wise multiply of two tensors (onnxruntime: QLinearMul)."""

    def hybrid_forward(self, F, x):
        return x * x


class _HardSigmoidOnly(HardSwish):
    """Timing stand-in: one FP32 operator with no int8 kernel in MXNet 1.9.1."""

    def hybrid_forward(self, F, x):
        return F.hard_sigmoid(x, alpha=1.0 / 6, beta=0.5)


class _Relu(HardSwish):
    """Timing stand-in: an activation both runtimes fold into the convolution before it."""

    def hybrid_forward(self, F, x):
        return F.relu(x)


STAND_INS = {'onnxruntime': {'one_op': _Square, 'none': _Relu},
             'mxnet': {'one_op': _HardSigmoidOnly, 'none': _Relu}}


def with_stand_in(net, kind):
    """``net`` with every HardSwish block replaced by an instance of ``kind`` (in place; Gluon's
    ``apply`` visits every block, each after its children)."""
    def swap(block):
        for name, child in list(block._children.items()):
            if isinstance(child, HardSwish):
                setattr(block, name, kind())
    return net.apply(swap)


def write_graphs(calib, folder):
    """Every timed graph written to ``folder``: {(runtime, variant): (engine, file or prefix)}."""
    shape = (1, 3, SIZE, SIZE)
    graphs = {}
    for variant in ('real', 'one_op', 'none'):
        for engine in ('onnxruntime', 'mxnet'):
            net = unit_scale_net(MODEL, SIZE)[0]
            if variant != 'real':
                with_stand_in(net, STAND_INS[engine][variant])
            base = os.path.join(folder, '%s_%s' % (engine, variant))
            if engine == 'onnxruntime':
                export_onnx(merge_bn(net, shape), base + '.onnx', shape, dynamic_batch=True,
                            channel_block=ONNX_CHANNEL_BLOCK)  # what nas-export writes
                quantize_ort(base + '.onnx', base + '.int8.onnx', ArrayReader(calib))
                graphs[('ort_int8', variant)] = (engine, base + '.int8.onnx')
                if variant == 'real':
                    graphs[('ort_fp32', variant)] = (engine, base + '.onnx')
            else:
                qnet, report = quantize_mxnet(net, ArrayReader(calib), shape)
                save_mxnet_int8(qnet, base + '_int8', report)
                graphs[('mxnet_int8', variant)] = (engine, base + '_int8')
                if variant == 'real':
                    export_deploy(net, base + '_deploy', shape)
                    graphs[('mxnet_deploy', variant)] = (engine, base + '_deploy')
    return graphs


def measure(runs, runs32, rounds, calib_images, progress=print):
    calib = open_reader('digits', SIZE, num_images=calib_images).batches
    result = {'machine': machine(), 'model': MODEL, 'input_size': SIZE,
              'timing': 'one worker process per runtime, %d rounds' % rounds,
              'stand_ins': {engine: {variant: kind.__doc__.split(':', 1)[1].strip()
                                     for variant, kind in kinds.items()}
                            for engine, kinds in STAND_INS.items()},
              'batches': {}}
    with tempfile.TemporaryDirectory(prefix='bench-hard-swish-') as folder:
        start = time.time()
        graphs = write_graphs(calib, folder)
        progress('wrote %d graphs in %.0f s' % (len(graphs), time.time() - start))
        probes = {engine: write_probe(engine, folder) for engine in ('mxnet', 'onnxruntime')}
        for batch, count in ((1, runs), (32, runs32)):
            found = measure_in_workers(graphs, (batch, 3, SIZE, SIZE), count, rounds, probes)
            times = {'%s/%s' % key: round_stats(timings) for key, timings in found.items()}
            speedups = {}
            for runtime, baseline in (('ort_int8', 'ort_fp32'), ('mxnet_int8', 'mxnet_deploy')):
                for variant in ('real', 'one_op', 'none'):
                    speedups['%s/%s' % (runtime, variant)] = round(round_ratio(
                        found, (baseline, 'real'), (runtime, variant)), 3)
            result['batches']['b%d' % batch] = {'times': times, 'speedup_over_fp32': speedups}
            progress('batch %d: %s' % (batch, speedups))
    result['machine']['load_average_after'] = [round(v, 2) for v in os.getloadavg()]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=50, help='timed runs at batch 1')
    parser.add_argument('--runs32', type=int, default=30, help='timed runs at batch 32')
    parser.add_argument('--rounds', type=int, default=2, help='turns each runtime worker takes')
    parser.add_argument('--calib-images', type=int, default=32)
    args = parser.parse_args()
    result = measure(args.runs, args.runs32, args.rounds, args.calib_images)
    write_json(RESULTS, result, indent=2)
    print('wrote %s' % RESULTS)


if __name__ == '__main__':
    main()
