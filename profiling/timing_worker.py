"""The timing worker process (``python -m profiling.timing_worker MODE SPEC``), one runtime each.

``measure``: interleaved chunks of models and the reference probe (``timing.measure_models``).
``trace``: MXNet runs alternating with profiled runs for the op-by-op profile. It reports on
stdout line by line: ``run`` after timed runs, ``result INDEX-AND-JSON`` per model.
"""
import json
import math
import os
import sys
import time

from profiling.timing import CacheFlusher, ort_session, random_input


def _ort_runner(path, shape, threads):
    session = ort_session(path, threads, spinning=False)  # see timing's module note
    feed = {session.get_inputs()[0].name: random_input(shape)}
    return lambda: session.run(None, feed), feed[session.get_inputs()[0].name]


def _mxnet_block(prefix):
    import mxnet as mx
    from export.mxnet_symbol import symbol_block
    saved = mx.nd.load(prefix + '-0000.params')  # a list when the net has no weights
    params = {name.split(':', 1)[1]: value for name, value in dict(saved or {}).items()}
    block = symbol_block(mx.sym.load(prefix + '-symbol.json'), params)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


def _mxnet_runner(prefix, shape, threads):
    import mxnet as mx
    block = _mxnet_block(prefix)
    data = mx.nd.array(random_input(shape))
    return lambda: block(data).wait_to_read(), data  # NaiveEngine: returns when done


def _timed(run, count, before=None, repeat=1):
    """``count`` samples, each the mean time of ``repeat`` consecutive runs (``before()`` is
    called untimed before every run)."""
    seconds = []
    for _ in range(count):
        total = 0.0
        for _ in range(repeat):
            if before is not None:
                before()
            start = time.perf_counter()
            run()
            total += time.perf_counter() - start
        seconds.append(total / repeat)
    return seconds


def _repeat(run, warmup, window):
    """Warm ``run`` up; return how many runs make one sample of about ``window`` seconds."""
    times = _timed(run, max(2, warmup))  # the first call builds the graph
    return max(1, int(round(window / max(sorted(times)[len(times) // 2], 1e-6))))


def measure(spec, runtime, threads):
    make = _ort_runner if runtime == 'onnxruntime' else _mxnet_runner
    probe, _ = make(spec['probe'][0], spec['probe'][1], threads)
    flush = CacheFlusher(spec['flush_bytes'])
    per_chunk = math.ceil(spec['runs'] / spec['chunks'])
    models = spec['models']
    for start in range(0, len(models), spec['group']):
        runners = [make(model, shape, threads) for model, shape in
                   models[start:start + spec['group']]]
        probe_repeat = _repeat(probe, spec['warmup'], spec['window_s'])
        repeats = [_repeat(run, spec['warmup'], spec['window_s']) for run, _ in runners]
        results = [{'seconds': [], 'probe_seconds': []} for _ in runners]
        for _ in range(spec['chunks']):
            for (run, data), repeat, result in zip(runners, repeats, results):
                time.sleep(spec['pause_s'])
                result['probe_seconds'] += _timed(probe, per_chunk, repeat=probe_repeat)
                time.sleep(spec['pause_s'])
                result['seconds'] += _timed(run, per_chunk, lambda: flush(data), repeat)
            print('run', flush=True)
        for offset, result in enumerate(results):
            print('result', json.dumps([start + offset, result]), flush=True)


def trace(jobs):
    import mxnet as mx
    for index, job in enumerate(jobs):
        block = _mxnet_block(job['prefix'])
        data = mx.nd.array(random_input(job['shape']))
        if job.get('trace'):
            mx.profiler.set_config(profile_all=True, aggregate_stats=False, filename=job['trace'])
        _timed(lambda: block(data).wait_to_read(), max(1, job['warmup']))  # builds the graph
        result = {'seconds': [], 'profiled_seconds': []}
        for _ in range(job['runs']):
            result['seconds'] += _timed(lambda: block(data).wait_to_read(), 1)
            print('run', flush=True)
            if job.get('trace'):  # alternate plain and profiled runs: same machine conditions
                mx.profiler.set_state('run')
                result['profiled_seconds'] += _timed(lambda: block(data).wait_to_read(), 1)
                mx.profiler.set_state('stop')
                print('run', flush=True)
        if job.get('trace'):
            mx.profiler.dump()
        print('result', json.dumps([index, result]), flush=True)


def main(mode, spec_file):
    with open(spec_file) as handle:
        spec = json.load(handle)
    if mode == 'trace':
        trace(spec)
    else:
        measure(spec, os.environ['NAS_TIMING_RUNTIME'], int(os.environ['NAS_TIMING_THREADS']))


if __name__ == '__main__':
    main(*sys.argv[1:3])
