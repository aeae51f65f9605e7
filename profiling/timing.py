"""Timing shared by op-by-op profiling and the latency table: runtimes, thread control, statistics.

onnxruntime runs in this process with its own thread pool of ``threads`` threads. MXNet reads its
thread count (``OMP_NUM_THREADS``) and engine only when it starts, so MXNet timing runs in a fresh
worker process (``python -m profiling.timing JOBS``) with the NaiveEngine: operators then execute
one at a time in graph order, which lets the profiler's per-operator events be matched to graph
nodes and keeps per-op and end-to-end timings comparable.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict

import numpy as np

from nas.errors import DependencyError, ProfilingError

__all__ = ['RUNTIMES', 'Timing', 'summarize', 'check_runtime', 'check_counts', 'cpu_model',
           'runtime_version', 'CacheFlusher', 'time_runs', 'random_input', 'ort_session',
           'time_onnx', 'run_mxnet_jobs']

RUNTIMES = ('mxnet', 'onnxruntime')
_FLOAT_BYTES = 4


@dataclass(frozen=True)
class Timing:
    """Statistics of timed runs, in milliseconds."""
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    def to_dict(self):
        return asdict(self)


def summarize(seconds):
    """Median / p90 / mean / min of run times given in seconds."""
    values = np.asarray(seconds, dtype=float) * 1e3
    if values.size == 0:
        raise ProfilingError('no timed runs to summarize; use runs >= 1')
    return Timing(float(np.median(values)), float(np.percentile(values, 90)),
                  float(values.mean()), float(values.min()), int(values.size))


def check_runtime(runtime):
    """The runtime name if it is known and importable, else a one-line error."""
    if runtime not in RUNTIMES:
        raise ProfilingError('unknown runtime %r; known: %s' % (runtime, ', '.join(RUNTIMES)))
    if runtime == 'onnxruntime':
        _import_ort()
    return runtime


def check_counts(runs, warmup=0, threads=1, batch_size=1):
    """Reject counts that would make a measurement meaningless (zero runs, zero threads)."""
    for name, value, least in (('runs', runs, 1), ('warm-up runs', warmup, 0),
                               ('threads', threads, 1), ('batch size', batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ProfilingError('%s must be an integer >= %d, got %r' % (name, least, value))


def cpu_model():
    """The CPU model name from /proc/cpuinfo (platform's description elsewhere)."""
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def runtime_version(runtime):
    if runtime == 'onnxruntime':
        return _import_ort().__version__
    import mxnet
    return mxnet.__version__


def _import_ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise DependencyError('the onnxruntime runtime is not installed (%s); pip install '
                              'onnxruntime or use --runtime mxnet' % err) from err
    return onnxruntime


class CacheFlusher:
    """Reads ``flush_bytes`` of unrelated memory before a run, then the run's input.

    A block measured alone keeps its weights in cache from one run to the next; inside a
    network the other blocks evict them. Reading as many bytes as the rest of a network touches
    reproduces that, while the input (just produced by the previous block) stays warm.
    """

    def __init__(self, flush_bytes):
        count = max(0, int(flush_bytes)) // _FLOAT_BYTES
        self._buffer = np.ones(count, dtype=np.float32) if count else None

    def __call__(self, *inputs):
        if self._buffer is not None:
            self._buffer.sum()
            for array in inputs:
                array.sum()


def time_runs(run, runs, warmup, before=None, progress=None):
    """Call ``run()`` ``warmup`` times (at least once: the first call builds the graph), then
    time ``runs`` calls; returns seconds per run.

    ``before()`` runs untimed before every timed call; ``progress.update(1)`` after it.
    """
    for _ in range(max(1, warmup)):
        run()
    seconds = []
    for _ in range(runs):
        if before is not None:
            before()
        seconds.append(_timed(run))
        if progress is not None:
            progress.update(1)
    return seconds


def ort_session(model, threads, profile_prefix=None):
    """An onnxruntime CPU session with ``threads`` intra-op threads, sequential execution."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # layout-optimisation notices are not problems
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ProfilingError('onnxruntime cannot load the model: %s'
                             % str(err).strip().splitlines()[0]) from err


def random_input(shape, seed=0):
    """A normal random input: zeros would hit fast paths that real images never take."""
    return np.random.RandomState(seed).standard_normal(tuple(shape)).astype(np.float32)


def time_onnx(model, input_shape, threads, runs, warmup, flush_bytes=0, progress=None):
    """Median-based Timing of an ONNX model (path or bytes) in onnxruntime."""
    session = ort_session(model, threads)
    name = session.get_inputs()[0].name
    data = random_input(input_shape)
    flush = CacheFlusher(flush_bytes)
    return summarize(time_runs(lambda: session.run(None, {name: data}), runs, warmup,
                               before=lambda: flush(data), progress=progress))


# --------------------------------------------------------------------------------------------
# MXNet worker process


def run_mxnet_jobs(jobs, threads, on_result=None, progress=None):
    """Time exported MXNet models in a fresh process with ``threads`` OpenMP threads.

    Each job is a dict: ``prefix`` (of ``prefix-symbol.json`` / ``prefix-0000.params``),
    ``shape``, ``runs``, ``warmup``, optional ``flush_bytes`` and ``trace`` (a path: profile the
    runs and dump MXNet's trace there). Returns one result per job: ``seconds`` (plain runs) and,
    for traced jobs, ``profiled_seconds``. ``on_result(index, result)`` is called as each job
    ends, ``progress.update(1)`` after every timed run.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MXNET_ENGINE_TYPE='NaiveEngine', MXNET_EXEC_BULK_EXEC_INFERENCE='0',
               MXNET_CPU_WORKER_NTHREADS='1')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    if sum(1 for job in jobs if job.get('trace')) > 1:
        raise ValueError('MXNet writes one profiler trace per process; trace one job per call')
    results = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix='nas-profile-') as folder:
        job_file = os.path.join(folder, 'jobs.json')
        with open(job_file, 'w') as handle:
            json.dump(jobs, handle)
        errors = open(os.path.join(folder, 'stderr.txt'), 'w+')  # a file: a full pipe would block
        worker = subprocess.Popen([sys.executable, '-m', 'profiling.timing', job_file], env=env,
                                  stdout=subprocess.PIPE, stderr=errors, text=True)
        for line in worker.stdout:
            kind, _, payload = line.partition(' ')
            if kind == 'run' and progress is not None:
                progress.update(1)
            elif kind == 'result':
                index, result = json.loads(payload)
                results[index] = result
                if on_result is not None:
                    on_result(index, result)
        failed = worker.wait() != 0 or None in results
        errors.seek(0)
        last = [line for line in errors.read().splitlines()  # not MXNet's '[time] file:' logs
                if line.strip() and not line.startswith('[')][-1:] or ['?']
        errors.close()
        if failed:
            raise ProfilingError('the MXNet timing process failed: %s' % last[0])
    return results


def _worker_main(job_file):
    """Entry point of the worker process: run the jobs, report on stdout line by line."""
    import mxnet as mx
    from export.mxnet_symbol import symbol_block
    with open(job_file) as handle:
        jobs = json.load(handle)
    for index, job in enumerate(jobs):
        saved = mx.nd.load(job['prefix'] + '-0000.params')  # a list when the net has no weights
        params = {name.split(':', 1)[1]: value for name, value in dict(saved or {}).items()}
        block = symbol_block(mx.sym.load(job['prefix'] + '-symbol.json'), params)
        block.hybridize(static_alloc=True, static_shape=True)
        data = mx.nd.array(random_input(job['shape']))
        flush = CacheFlusher(job.get('flush_bytes', 0))
        if job.get('trace'):
            mx.profiler.set_config(profile_all=True, aggregate_stats=False, filename=job['trace'])
        for _ in range(max(1, job['warmup'])):  # the first call builds the cached graph
            block(data).wait_to_read()
        result = {'seconds': [], 'profiled_seconds': []}
        for _ in range(job['runs']):
            flush(data)  # NaiveEngine: the flush's reads finish before the call returns
            result['seconds'].append(_timed(lambda: block(data).wait_to_read()))
            print('run', flush=True)
            if job.get('trace'):  # alternate plain and profiled runs: same machine conditions
                mx.profiler.set_state('run')
                result['profiled_seconds'].append(_timed(lambda: block(data).wait_to_read()))
                mx.profiler.set_state('stop')
                print('run', flush=True)
        if job.get('trace'):
            mx.profiler.dump()
        print('result', json.dumps([index, result]), flush=True)


def _timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == '__main__':
    _worker_main(sys.argv[1])
