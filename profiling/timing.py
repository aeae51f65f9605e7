"""The one way this project times inference: runtimes, thread control, statistics, the probe.

Every measurement runs in a worker process that loads ONE runtime (``python -m
profiling.timing_worker``): MXNet's OpenMP threads and onnxruntime's spinning pool threads never
share a process, and the main process (which traces and exports with MXNet) only waits while the
worker times. Models are timed in interleaved chunks, and before every chunk the worker times a
fixed *reference probe* (a fixed network on the same runtime and threads:
``profiling.deploy.write_probe``). A model's median divided by the median of its neighbouring
probe chunks is its time in *probe units*: a slower machine (other work, a lower clock) slows
model and probe alike, so units survive drift.

A *sample* is the mean of as many consecutive runs as fill a window of about ``WINDOW_S`` (one
run for a whole network or the probe, dozens for a small block). Other processes take the CPU in
scheduler slices of a few milliseconds: a 0.3 ms run usually slips between them while a 6 ms
network does not, so only samples of equal length see the same share of a busy machine.
onnxruntime sessions run with intra-op spinning off: each session has its own pool, and pool
threads spinning after one session's run steal the cores from the next (issue #14 measured
0.71x vs 1.78x for the same graph), the more so on a busy machine where a spinning thread burns
whole scheduler slices. Off, idle threads sleep at once and no measurement depends on its
neighbours; deployments on shared machines should switch it off too (it also made whole
networks faster there). MXNet keeps OpenMP's default wait policy, as a user runs it: a worker
holds one runtime, so its OpenMP pool has no neighbour to steal from, and passive waiting (the
pool's threads put to sleep after every operator) made MXNet graphs of 300 operators 2.6-2.8x
slower (issue #14).
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

__all__ = ['RUNTIMES', 'Timing', 'Measurement', 'summarize', 'check_runtime', 'check_counts',
           'cpu_model', 'runtime_version', 'CacheFlusher', 'time_runs', 'random_input',
           'ort_session', 'measure_models', 'run_mxnet_jobs', 'PAUSE_S', 'WINDOW_S']

RUNTIMES = ('mxnet', 'onnxruntime')
PAUSE_S = 0.005  # before every chunk: the previous runner's threads go to sleep
WINDOW_S = 0.005  # length of one timed sample
_FLOAT_BYTES = 4


@dataclass(frozen=True)
class Timing:
    """Statistics of timed runs, in milliseconds; ``spread`` is the interquartile range over
    the median (0.02: the middle half of the runs lie within 2 % of the median)."""
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    spread: float
    runs: int

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """A model's Timing next to the probe chunks timed between its chunks; ``timings``: how
    many times its group was timed (``deploy.measure_deployed`` times a disturbed one again)."""
    timing: Timing
    probe: Timing
    timings: int = 1

    @property
    def units(self):
        """The model's median in probe units (median over the median of its probes)."""
        return self.timing.median_ms / self.probe.median_ms

    def to_dict(self):
        return {'timing': self.timing.to_dict(), 'probe': self.probe.to_dict(),
                'units': self.units, 'timings': self.timings}


def summarize(seconds):
    """Median / p90 / mean / min / spread of run times given in seconds."""
    values = np.asarray(seconds, dtype=float) * 1e3
    if values.size == 0:
        raise ProfilingError('no timed runs to summarize; use runs >= 1')
    median = float(np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    return Timing(median, float(np.percentile(values, 90)), float(values.mean()),
                  float(values.min()), float((q3 - q1) / median) if median > 0 else 0.0,
                  int(values.size))


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
    """The CPU model name from /proc/cpuinfo with its family and model numbers (platform's
    description elsewhere). Virtual machines may name only the vendor's line ('AMD EPYC'); the
    numbers tell its generations apart, whose speeds differ (two such 'AMD EPYC' machines here:
    float32 GEMM peak 211 vs 249 GFLOPS on 2 cores, onnxruntime INT8 over FP32 1.70x vs 1.40x
    at batch 1 on OneShot-S+)."""
    fields = {}
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                key, _, value = line.partition(':')
                if not key.strip():  # the first processor's block ends here
                    break
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    name = fields.get('model name') or platform.processor() or platform.machine() or 'unknown'
    if 'cpu family' in fields and 'model' in fields:
        return '%s (family %s, model %s)' % (name, fields['cpu family'], fields['model'])
    return name


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
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
        if progress is not None:
            progress.update(1)
    return seconds


def ort_session(model, threads, profile_prefix=None, spinning=True):
    """An onnxruntime CPU session with ``threads`` intra-op threads, sequential execution;
    ``spinning=False``: idle pool threads sleep at once instead of spinning for more work."""
    ort = _import_ort()
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
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


# --------------------------------------------------------------------------------------------
# the worker process


def measure_models(models, runtime, threads, probe, runs=20, warmup=5, chunks=4,
                   flush_bytes=0, group=20, on_result=None):
    """Time exported models in one worker process, interleaved with the reference probe.

    ``models`` are ONNX paths (onnxruntime) or ``prefix`` strings of ``prefix-symbol.json`` /
    ``prefix-0000.params`` (MXNet), each with its input shape: ``[(model, shape), ...]``;
    ``probe`` is one more such pair (``profiling.probe`` writes it). ``group`` models are loaded
    at a time and timed in ``chunks`` rounds of ``ceil(runs / chunks)`` runs each; every chunk
    is preceded by a chunk of the probe. A run is a sample of about ``WINDOW_S`` (see the
    module's note). ``flush_bytes`` of unrelated memory are read before
    every timed run of a model (not of the probe). Returns one Measurement per model;
    ``on_result(index, measurement)`` is called as each one is complete.
    """
    check_runtime(runtime)
    check_counts(runs, warmup, threads)
    check_counts(chunks, 0, group)
    spec = dict(runtime=runtime, runs=runs, warmup=warmup, chunks=min(chunks, runs),
                flush_bytes=int(flush_bytes), group=group, pause_s=PAUSE_S, window_s=WINDOW_S,
                probe=[probe[0], list(probe[1])],
                models=[[model, list(shape)] for model, shape in models])
    results = [None] * len(models)

    def on_line(kind, payload):
        if kind == 'result':
            index, result = json.loads(payload)
            results[index] = Measurement(summarize(result['seconds']),
                                         summarize(result['probe_seconds']))
            if on_result is not None:
                on_result(index, results[index])
    _run_worker('measure', spec, runtime, threads, on_line)
    return results


def run_mxnet_jobs(jobs, threads, on_result=None, progress=None):
    """Time exported MXNet models op by op in a fresh MXNet worker with the NaiveEngine.

    Each job is a dict: ``prefix`` (of ``prefix-symbol.json`` / ``prefix-0000.params``),
    ``shape``, ``runs``, ``warmup`` and optional ``trace`` (a path: alternate plain and profiled
    runs and dump MXNet's trace there). Returns one result per job: ``seconds`` (plain runs) and,
    for traced jobs, ``profiled_seconds``. ``progress.update(1)`` after every timed run.
    """
    if sum(1 for job in jobs if job.get('trace')) > 1:
        raise ValueError('MXNet writes one profiler trace per process; trace one job per call')
    results = [None] * len(jobs)

    def on_line(kind, payload):
        if kind == 'run' and progress is not None:
            progress.update(1)
        elif kind == 'result':
            index, result = json.loads(payload)
            results[index] = result
            if on_result is not None:
                on_result(index, result)
    _run_worker('trace', jobs, 'mxnet', threads, on_line)
    return results


def _run_worker(mode, spec, runtime, threads, on_line):
    """Run ``python -m profiling.timing_worker MODE SPEC`` with ``threads`` threads for
    ``runtime``; ``on_line(kind, payload)`` for every line it prints."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MXNET_ENGINE_TYPE='NaiveEngine', MXNET_EXEC_BULK_EXEC_INFERENCE='0',
               MXNET_CPU_WORKER_NTHREADS='1', NAS_TIMING_RUNTIME=runtime,
               NAS_TIMING_THREADS=str(threads))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    with tempfile.TemporaryDirectory(prefix='nas-timing-') as folder:
        spec_file = os.path.join(folder, 'spec.json')
        with open(spec_file, 'w') as handle:
            json.dump(spec, handle)
        # stderr to a file: a full pipe would block the worker
        with open(os.path.join(folder, 'stderr.txt'), 'w+') as errors:
            worker = subprocess.Popen([sys.executable, '-m', 'profiling.timing_worker', mode,
                                       spec_file], env=env, stdout=subprocess.PIPE,
                                      stderr=errors, text=True)
            try:
                for line in worker.stdout:
                    kind, _, payload = line.rstrip('\n').partition(' ')
                    on_line(kind, payload)
            except BaseException:
                worker.kill()  # the caller stopped (Ctrl-C, a failed store): no orphan worker
                worker.wait()
                raise
            code = worker.wait()
            errors.seek(0)
            last = [line for line in errors.read().splitlines()  # not MXNet's '[time] file:'
                    if line.strip() and not line.startswith('[')][-1:] or ['?']
        if code != 0:
            raise ProfilingError('the %s timing process failed: %s' % (runtime, last[0]))
