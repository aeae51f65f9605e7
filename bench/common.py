"""What the deployment benchmarks share: two pinned threads, zoo or gluoncv nets with unit-scale
random weights, interleaved timing, the float32 GEMM peak and onnxruntime's per-op-type profile.

Import this module before MXNet: MXNet reads its thread count only when it starts.
"""
import collections
import json
import os
import sys
import time

THREADS = 2
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ[_var] = str(THREADS)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from export.mxnet_symbol import symbol_block, trace  # noqa: E402
from nas.counting import count_net  # noqa: E402
from profiling.timing import cpu_model, ort_session, random_input, summarize  # noqa: E402


def stats(seconds):
    """Median and p90 in milliseconds, rounded for the results file."""
    timing = summarize(seconds)
    return {'median_ms': round(timing.median_ms, 3), 'p90_ms': round(timing.p90_ms, 3),
            'runs': timing.runs}


def interleaved(funcs, runs, chunk=1, warmup=2):
    """Seconds per call of each ``funcs[key]``, timed in alternating chunks of ``chunk`` calls:
    a load change on a shared machine then hits every candidate alike, and the i-th times of two
    candidates form a pair (see ``paired_ratio``)."""
    for func in funcs.values():
        for _ in range(warmup):
            func()
    seconds = {key: [] for key in funcs}
    while min(len(values) for values in seconds.values()) < runs:
        for key, func in funcs.items():
            for _ in range(min(chunk, runs - len(seconds[key]))):
                start = time.perf_counter()
                func()
                seconds[key].append(time.perf_counter() - start)
    return {key: np.asarray(values) for key, values in seconds.items()}


def paired_ratio(times, numerator, denominator):
    """Median over pairs of ``times[numerator] / times[denominator]``."""
    return float(np.median(times[numerator] / times[denominator]))


def gemm_peak(n=4096, repeats=5):
    """Best float32 GEMM rate in GFLOPS on the pinned threads, numpy and MXNet (2 n^3 flops)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
    ma, mb = mx.nd.array(a), mx.nd.array(b)
    times = interleaved({'numpy': lambda: a @ b,
                         'mxnet': lambda: mx.nd.dot(ma, mb).wait_to_read()}, repeats, warmup=1)
    return {key: round(2 * n ** 3 / float(np.min(values)) / 1e9, 1)
            for key, values in times.items()}


def unit_scale_net(name, size):
    """The zoo or gluoncv net ``name`` with Xavier weights and randomised BN statistics, and its
    counts at ``size``. Speed does not depend on weight values, but default BN statistics with
    tiny activations would hit denormal slow paths that trained weights never see."""
    from zoo import RANDOM, load_model
    net = load_model(name, RANDOM).net
    net(mx.nd.zeros((1, 3, size, size)))  # gluoncv layers infer their shapes on the first call
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2),
                   force_reinit=True)
    rng = np.random.RandomState(0)
    for pname, param in net.collect_params().items():
        if pname.endswith('running_var') or pname.endswith('gamma'):
            param.set_data(mx.nd.array(rng.rand(*param.shape) + 0.5))
        elif pname.endswith('running_mean') or pname.endswith('beta'):
            param.set_data(mx.nd.array(rng.randn(*param.shape) * 0.1))
    return net, count_net(net, (1, 3, size, size))


def fresh_copy(net, shape):
    """A SymbolBlock of the same graph and weights (optimize_for rewrites the block it is given)."""
    sym, params = trace(net, shape)
    return symbol_block(sym, {k: v.asnumpy() for k, v in params.items()})


def mxnet_runner(block, shape):
    data = mx.nd.array(random_input(shape))
    return lambda: block(data).wait_to_read()


def ort_runner(path, shape, threads=THREADS):
    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: random_input(shape)}
    return lambda: session.run(None, feed)


def ort_op_profile(path, shape, runs, folder, threads=THREADS):
    """Kernel time per op type over ``runs`` runs (ms per run and share), reorders included."""
    session = ort_session(path, threads, os.path.join(folder, 'profile'))
    feed = {session.get_inputs()[0].name: random_input(shape)}
    for _ in range(runs):
        session.run(None, feed)
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


def write_mxnet_graphs(net, shape, base):
    """The FP32 MXNet graphs of the table, written as ``prefix`` files that a timing worker loads
    (``profiling.timing.measure_models``): as traced ('mxnet', run hybridized), BN merged and
    partitioned for oneDNN ('mxnet_merged_bn'), and the deployment graph ('mxnet_deploy', what
    ``nas-export --mxnet`` writes). Returns {runtime: prefix}."""
    from export.deploy import export_deploy, fuse_onednn, save_graph
    from export.merge_bn import merge_bn_symbol
    from export.mxnet_symbol import export_mxnet
    prefixes = {kind: '%s_%s' % (base, kind) for kind in ('mxnet', 'mxnet_merged_bn',
                                                          'mxnet_deploy')}
    export_mxnet(net, prefixes['mxnet'], shape)
    merged, params, _ = merge_bn_symbol(*trace(net, shape))
    save_graph(fuse_onednn(merged, params, shape), params, prefixes['mxnet_merged_bn'])
    export_deploy(net, prefixes['mxnet_deploy'], shape)
    return prefixes


def measure_in_workers(models, shape, runs, rounds, probes, progress=None):
    """Time ``models`` ({key: (runtime, model file or prefix)}) at ``shape``, each runtime in its
    own worker process (``profiling.timing.measure_models``: no runtime's threads share a process
    with another's), the runtimes taking turns over ``rounds`` rounds so that a change of load
    hits all of them. Returns {key: [Timing of each round]}."""
    from profiling.timing import measure_models
    found = {key: [] for key in models}
    order = sorted({runtime for runtime, _ in models.values()})
    for round_ in range(rounds):
        for runtime in order if round_ % 2 == 0 else order[::-1]:
            keys = [key for key, (kind, _) in models.items() if kind == runtime]
            results = measure_models([(models[key][1], shape) for key in keys], runtime, THREADS,
                                     probes[runtime], runs=max(1, runs // rounds), warmup=2,
                                     chunks=2, group=len(keys))
            for key, result in zip(keys, results):
                found[key].append(result.timing)
            if progress is not None:
                progress('round %d: %s timed' % (round_ + 1, runtime))
    return found


def round_stats(timings):
    """Median ms over the rounds' medians (p90 likewise), and the runs behind them."""
    return {'median_ms': round(float(np.median([t.median_ms for t in timings])), 3),
            'p90_ms': round(float(np.median([t.p90_ms for t in timings])), 3),
            'runs': int(sum(t.runs for t in timings))}


def round_ratio(found, numerator, denominator):
    """Median over rounds of ``numerator``'s median over ``denominator``'s, both of one round."""
    return float(np.median([a.median_ms / b.median_ms
                            for a, b in zip(found[numerator], found[denominator])]))


def machine():
    return {'cpu': cpu_model(), 'threads': THREADS, 'mxnet': mx.__version__,
            'load_average': [round(v, 2) for v in os.getloadavg()]}


def mxnet_variants(net, shape):
    """MXNet's ways to run ``net``: plain hybridized; merged BN + oneDNN (MKLDNN) fusion, the
    deployment path; hybridized + oneDNN fusion. ``net`` itself becomes the hybridized one."""
    from export.merge_bn import merge_bn
    x = mx.nd.zeros(shape)
    net.hybridize(static_alloc=True, static_shape=True)
    net(x)
    merged = merge_bn(net, shape)
    merged.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
    fused = fresh_copy(net, shape)
    fused.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
    return {'hybridized': net, 'merged_bn+onednn': merged, 'hybridized+onednn': fused}
