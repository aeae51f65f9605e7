"""Measured latency of every operator, next to its FLOPs, mapped back to the network's blocks.

MXNet: the profiler's operator events of the deployment graph that ``nas-export --mxnet`` writes
(BN merged, the shuffle as slices, oneDNN's fused convolutions; NaiveEngine: one operator at a
time, in graph order, so the events match the graph nodes one to one). onnxruntime: the per-node
kernel times of its session profiling JSON, after its graph optimisations. Fused convolutions
carry the FLOPs of their convolution. Both graphs name their nodes after MXNet's op names, whose
prefixes are the Gluon blocks' prefixes: that gives every op its block (stem, units.<i>,
head). FLOPs are the counter's per-layer figures (``nas.counting``, SPEC §6.1).
"""
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, asdict, field
from typing import Optional, Tuple

from mxnet.gluon import nn

from export.deploy import deployment_graph, save_graph
from export.mxnet_symbol import INPUT_NAME
from export.onnx import export_onnx
from nas.atomic import write_csv, write_json
from nas.counting import count_ops
from nas.trace_mxnet import trace_net
from nas.errors import ProfilingError
from nas.network import OneShotNet
from .timing import (Timing, check_counts, check_runtime, cpu_model, random_input,
                     run_mxnet_jobs, ort_session, runtime_version, summarize, time_runs)

__all__ = ['OpRow', 'OpProfile', 'profile_op_by_op', 'block_prefixes', 'block_of']

_HEAD_PARTS = ('tail', 'dropout', 'output')  # OneShotNet children after the last unit
_CONV_TYPES = ('Conv', 'FusedConv')
_REORDER_IN = 'ReorderInput'  # onnxruntime's layout conversion in front of the op it feeds
_CHUNK = 5  # onnxruntime runs per session before switching between plain and profiled


@dataclass(frozen=True)
class OpRow:
    """One executed operator. ``flops`` is the counter's figure (SPEC §6.1) for the whole batch of
    the layer named ``layer`` ('' when the op computes no counted layer); ``gflops`` counts one
    multiply-accumulate as two floating-point operations (hardware convention). ``time_ms`` is
    the median over the profiled runs, ``share`` its part of the summed medians."""
    name: str
    op_type: str
    block: str
    stage: Optional[int]
    out_shape: Tuple[int, ...]
    flops: int
    layer: str
    time_ms: float
    mean_ms: float
    share: float
    gflops: float


@dataclass
class OpProfile:
    """Per-op rows plus the end-to-end timings they should add up to."""
    model: str
    runtime: str
    runtime_version: str
    threads: int
    batch_size: int
    input_shape: Tuple[int, ...]
    cpu: str
    latency: Timing    # plain end-to-end runs
    profiled: Timing   # end-to-end runs with the profiler on, alternating with the plain ones
    rows: list = field(default_factory=list)
    block_order: list = field(default_factory=list)  # labels in the network's order

    @property
    def op_sum_ms(self):
        return sum(row.time_ms for row in self.rows)

    @property
    def op_mean_sum_ms(self):
        return sum(row.mean_ms for row in self.rows)

    @property
    def coverage(self):
        """Summed per-op means over the plain end-to-end mean (1.0 = all time explained).

        Means, because they add up: on a busy machine a run slowed by another process is slow
        in a few ops, which moves the end-to-end median but no op's median.
        """
        return self.op_mean_sum_ms / self.latency.mean_ms

    def block_totals(self):
        """Block -> ms, blocks in the network's order (an export may move a block's ops, e.g.
        a channel shuffle turned into slices of the previous unit's output)."""
        totals = {}
        for row in self.rows:
            totals[row.block] = totals.get(row.block, 0.0) + row.time_ms
        return self._in_block_order(totals)

    def _in_block_order(self, per_block):
        rank = {label: index for index, label in enumerate(self.block_order)}
        return dict(sorted(per_block.items(), key=lambda item: rank.get(item[0], len(rank))))

    def type_totals(self):
        """Op type -> ms, largest first."""
        totals = {}
        for row in self.rows:
            totals[row.op_type] = totals.get(row.op_type, 0.0) + row.time_ms
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def block_type_totals(self):
        """Block -> {op type -> ms}: what the plot stacks."""
        totals = {}
        for row in self.rows:
            per_type = totals.setdefault(row.block, {})
            per_type[row.op_type] = per_type.get(row.op_type, 0.0) + row.time_ms
        return self._in_block_order(totals)

    def to_dict(self):
        return {'model': self.model, 'runtime': self.runtime,
                'runtime_version': self.runtime_version, 'threads': self.threads,
                'batch_size': self.batch_size, 'input_shape': list(self.input_shape),
                'cpu': self.cpu, 'latency': self.latency.to_dict(),
                'profiled': self.profiled.to_dict(), 'op_sum_ms': self.op_sum_ms,
                'op_mean_sum_ms': self.op_mean_sum_ms, 'coverage': self.coverage,
                'block_totals_ms': self.block_totals(), 'type_totals_ms': self.type_totals(),
                'rows': [dict(asdict(row), out_shape=list(row.out_shape)) for row in self.rows]}

    def write_json(self, path):
        write_json(path, self.to_dict(), error=ProfilingError, indent=2, sort_keys=True)
        return path

    def write_csv(self, path):
        """One line per operator; the columns are OpRow's fields."""
        names = list(OpRow.__dataclass_fields__)
        rows = []
        for row in self.rows:
            values = dict(asdict(row), out_shape='x'.join(map(str, row.out_shape)))
            rows.append([values[name] for name in names])
        return write_csv(path, names, rows, error=ProfilingError)


# --------------------------------------------------------------------------------------------
# blocks


def block_prefixes(net):
    """(op-name prefix, block label, stage) of the net's blocks, in the network's order.

    Labels are the structural names of the top-level children, one level deeper inside a
    Sequential (``units.3``); OneShotNet's tail, dropout and classifier form the ``head``, and so
    do ops of the network itself (flatten). ``stage`` is 1-based for OneShotNet units.
    """
    units = net.units if isinstance(net, OneShotNet) else None
    entries = []
    for name, child in net._children.items():
        entries.append((child.prefix, 'head' if name in _HEAD_PARTS else name, None))
        if isinstance(child, (nn.HybridSequential, nn.Sequential)):
            for index, grandchild in child._children.items():
                stage = net.space.stage_of(int(index)) + 1 if child is units else None
                entries.append((grandchild.prefix, '%s.%s' % (name, index), stage))
    return entries + [(net.prefix, 'head', None)]


def block_of(op_name, prefixes):
    """(label, stage) of the block with the longest prefix that starts ``op_name``;
    (None, None) if none does."""
    for prefix, label, stage in sorted(prefixes, key=lambda entry: -len(entry[0])):
        if op_name.startswith(prefix):
            return label, stage
    return None, None


# --------------------------------------------------------------------------------------------
# entry point


def profile_op_by_op(net, input_size=224, batch_size=1, runtime='onnxruntime', threads=2,
                     runs=50, warmup=10, progress=None, model_name=''):
    """Time every operator of ``net`` and return an OpProfile.

    ``runs`` plain and ``runs`` profiled inferences are timed after ``warmup`` untimed ones;
    ``progress.update(1)`` is called after each of these 2 x ``runs`` inferences.
    """
    check_runtime(runtime)
    check_counts(runs, warmup, threads, batch_size)
    shape = (batch_size, 3, input_size, input_size)
    prefixes = block_prefixes(net)
    # the model's own FLOPs, also for ops of an exported graph whose channels were padded
    counted = {layer.name: layer.flops * batch_size
               for layer in count_ops(trace_net(net, shape[1:])).layers if layer.flops}
    with tempfile.TemporaryDirectory(prefix='nas-profile-') as folder:
        if runtime == 'mxnet':
            rows, latency, profiled = _profile_mxnet(net, counted, shape, threads, runs, warmup,
                                                     progress, folder)
        else:
            rows, latency, profiled = _profile_onnx(net, counted, shape, threads, runs, warmup,
                                                    progress, folder)
    medians = [statistics.median(samples) for *_, samples in rows]
    total = sum(medians) or 1.0
    op_rows = []
    for (name, op_type, out_shape, flops, layer, samples), median, block in zip(
            rows, medians, _blocks(rows, prefixes)):
        op_rows.append(OpRow(name, op_type, block[0], block[1], tuple(out_shape), flops, layer,
                             median, statistics.fmean(samples), median / total,
                             2.0 * flops / (median * 1e6) if median > 0 else 0.0))
    order = list(dict.fromkeys(label for _, label, _ in prefixes))
    return OpProfile(model_name or type(net).__name__, runtime, runtime_version(runtime),
                     threads, batch_size, shape, cpu_model(), latency, profiled, op_rows, order)


def _blocks(rows, prefixes):
    """Block of every row; ops the runtime added (layout reorders) join the op they serve."""
    found = [block_of(name, prefixes) for name, *_ in rows]
    for index, (name, *_) in enumerate(rows):
        if found[index][0] is not None:
            continue
        step = 1 if name.startswith(_REORDER_IN) else -1
        neighbour = index + step
        while 0 <= neighbour < len(rows) and found[neighbour][0] is None:
            neighbour += step
        found[index] = found[neighbour] if 0 <= neighbour < len(rows) else ('head', None)
    return found


# --------------------------------------------------------------------------------------------
# MXNet


def _profile_mxnet(net, counted, shape, threads, runs, warmup, progress, folder):
    """Rows (name, type, shape, flops, layer, ms per run) of the deployment graph that
    ``nas-export --mxnet`` writes, from MXNet's trace, in graph order. A fused convolution
    carries its convolution's name, so it keeps that layer's FLOPs and its block."""
    prefix = os.path.join(folder, 'model')
    sym, params, _ = deployment_graph(net, shape)
    save_graph(sym, params, prefix)
    trace = os.path.join(folder, 'trace.json')
    [result] = run_mxnet_jobs([dict(prefix=prefix, shape=list(shape), runs=runs,
                                    warmup=warmup, trace=trace)], threads, progress=progress)
    nodes = [node for node in json.loads(sym.tojson())['nodes'] if node['op'] != 'null']
    times = _align(nodes, _mxnet_spans(trace), runs)
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(**{INPUT_NAME: shape})
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    rows = [(node['name'], node['op'], tuple(shapes[node['name'] + '_output']),
             counted.get(node['name'], 0), node['name'] if node['name'] in counted else '',
             samples) for node, samples in zip(nodes, times)]
    return rows, summarize(result['seconds']), summarize(result['profiled_seconds'])


def _mxnet_spans(trace):
    """(begin µs, end µs, op type) of every operator record, in execution order.

    The NaiveEngine reports most operators twice, one record nested in the other: keep the outer.
    Internal ops (MKL-DNN's Reorder inside a Convolution) stay; ``_align`` skips them.
    """
    with open(trace) as handle:
        events = json.load(handle)['traceEvents']
    opened, spans = {}, []
    for event in events:
        if event.get('cat') != 'operator' or event.get('ph') not in ('B', 'E'):
            continue
        key = (event.get('tid'), event['name'])
        if event['ph'] == 'B':
            opened.setdefault(key, []).append(event['ts'])
        elif opened.get(key):
            spans.append((opened[key].pop(0), event['ts'], event['name']))
    kept = []
    for span in spans:
        last = kept[-1] if kept else None
        if last is not None and last[2] == span[2] and _nested(span, last):
            kept[-1] = max(last, span, key=lambda s: s[1] - s[0])
        else:
            kept.append(span)
    return kept


def _nested(a, b):
    return (b[0] <= a[0] and a[1] <= b[1]) or (a[0] <= b[0] and b[1] <= a[1])


def _align(nodes, spans, runs):
    """Per node, its durations (ms) over the runs; the span sequence must repeat the graph's."""
    types = [node['op'] for node in nodes]
    wanted = set(types)
    spans = [span for span in spans if span[2] in wanted]
    if len(spans) != runs * len(nodes):
        raise ProfilingError('the MXNet profiler reported %d operator events for %d runs of %d '
                             'ops; cannot match them to graph nodes' % (len(spans), runs,
                                                                        len(nodes)))
    times = [[] for _ in nodes]
    for run in range(runs):
        chunk = spans[run * len(nodes):(run + 1) * len(nodes)]
        if [span[2] for span in chunk] != types:
            raise ProfilingError('MXNet executed the operators out of graph order in run %d; '
                                 'cannot match profiler events to graph nodes' % run)
        for samples, (begin, end, _) in zip(times, chunk):
            samples.append((end - begin) / 1e3)
    return times


# --------------------------------------------------------------------------------------------
# onnxruntime


def _profile_onnx(net, counted, shape, threads, runs, warmup, progress, folder):
    """Rows (name, type, shape, flops, layer, ms per run) from onnxruntime's profile, in
    execution order."""
    import onnx
    path = os.path.join(folder, 'model.onnx')
    export_onnx(net, path, shape)
    model = onnx.load(path)
    for node in model.graph.node:  # the converter leaves Conv nodes unnamed
        node.name = node.name or node.output[0]
    data = model.SerializeToString()
    feed = {INPUT_NAME: random_input(shape)}
    plain = ort_session(data, threads)
    profiled = ort_session(data, threads, profile_prefix=os.path.join(folder, 'ort'))
    # Short alternating chunks: a load change on the machine hits both sessions alike, and the
    # untimed first run of a chunk reloads the weights the other session's copy evicted.
    plain_seconds, timed, done = [], [], 0
    for start in range(0, runs, _CHUNK):
        size, warm = min(_CHUNK, runs - start), max(1, warmup) if start == 0 else 1
        plain_seconds += time_runs(lambda: plain.run(None, feed), size, warm, progress=progress)
        time_runs(lambda: profiled.run(None, feed), size, warm, progress=progress)
        timed += range(done + warm, done + warm + size)
        done += warm + size
    run_times, node_times = _ort_node_times(_load_events(profiled.end_profiling()), timed)
    original = _OnnxNames(model)
    rows = []
    for name, (op_type, out_shape, samples) in node_times.items():
        layer = original.layer(name, op_type, counted)
        rows.append((name, op_type, out_shape, counted.get(layer, 0), layer, samples))
    return rows, summarize(plain_seconds), summarize(run_times)


def _load_events(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    finally:
        os.remove(path)


def _ort_node_times(events, timed):
    """Durations (s) of the model runs numbered ``timed``, and per node (execution order):
    (op type, output shape, durations in ms)."""
    model_runs = sorted((e for e in events if e.get('name') == 'model_run'),
                        key=lambda e: e['ts'])
    if len(model_runs) <= timed[-1]:
        raise ProfilingError('onnxruntime profiled %d runs, expected %d'
                             % (len(model_runs), timed[-1] + 1))
    model_runs = [model_runs[index] for index in timed]
    kernels = sorted((e for e in events if e.get('cat') == 'Node'
                      and e['name'].endswith('_kernel_time')), key=lambda e: e['ts'])
    nodes = {}
    for run in model_runs:
        start, stop = run['ts'], run['ts'] + run['dur']
        for event in kernels:
            if start <= event['ts'] <= stop:
                name = event['name'][:-len('_kernel_time')]
                args = event.get('args', {})
                shapes = args.get('output_type_shape') or [{}]
                out_shape = next(iter(shapes[0].values()), [])
                entry = nodes.setdefault(name, (args.get('op_name', '?'), out_shape, []))
                entry[2].append(event['dur'] / 1e3)
    return [run['dur'] / 1e6 for run in model_runs], nodes


class _OnnxNames:
    """Find the exported node behind an onnxruntime node (fused nodes keep the name of the last
    node they absorbed, plus a suffix)."""

    def __init__(self, model):
        self.nodes = {node.name: node for node in model.graph.node}
        self.by_length = sorted(self.nodes, key=len, reverse=True)
        self.producer = {out: node for node in model.graph.node for out in node.output}

    def original(self, name):
        if name in self.nodes:
            return self.nodes[name]
        for candidate in self.by_length:
            if name.startswith(candidate):
                return self.nodes[candidate]
        return None

    def layer(self, name, op_type, counted):
        """The counted layer whose work an onnxruntime node does ('' if none).

        A fused convolution is named after its BN or activation: walk back to the Conv.
        """
        node = self.original(name)
        if node is None:
            return ''
        if op_type in _CONV_TYPES:
            while node is not None and node.op_type != 'Conv':
                node = self.producer.get(node.input[0])
            if node is None:
                return ''
        return node.name if node.name in counted else ''
