"""The model-zoo page: every zoo model beside the gluoncv peers the benchmark times, on this
machine's latency figures, as a static HTML folder that opens from disk (``nas-zoo page``).

Figures come from their sources and say which: FLOPs and params counted from each model's
graph (the card's ``nas-zoo info`` figures), published ImageNet top-1 (never measured here), a
user model's measured top-1 with its data set, and latency plus the INT8 MicroNet score either
read from a benchmark result (``bench/results.json``, with its CPU and date) or measured by the
page command itself (``measure=True``: onnxruntime FP32 and INT8, batch 1 and 32).
"""
import datetime
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from nas.counting import count_net
from nas.errors import OutputError, WeightsError
from zoo import RANDOM, load_model, registry, store
from profiling.scores import micronet_score
from profiling.timing import check_counts, cpu_model
from profiling.zoo_page_html import RUNTIME_LABELS, write_page_files

__all__ = ['GLUONCV_PEERS', 'RUNTIME_LABELS', 'PageResult', 'collect_models', 'read_results',
           'measure_latency', 'write_zoo_page', 'MARKER']

MARKER = 'zoo_page.json'  # the page's data; its presence marks a folder as a previous page
DEFAULT_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'bench', 'results.json')
# the gluoncv models bench/run_all.py times beside the zoo, with gluoncv's published top-1
GLUONCV_PEERS = {'mobilenetv3_large': 75.32, 'mobilenetv2_1.0': 72.04, 'resnet18_v1': 70.93}
GLUONCV_SOURCE = 'gluoncv model zoo (ImageNet val, 224), not measured here'
BUILTIN_SOURCE = 'SPOS reference implementation (ImageNet val, 224), not measured here'
# what --measure times: page key -> (runtime, precision) of profiling.deploy
MEASURED = {'ort_fp32': ('onnxruntime', 'fp32'), 'ort_int8': ('onnxruntime', 'int8')}
BATCHES = (1, 32)


@dataclass
class PageResult:
    """What ``write_zoo_page`` wrote: the index path, the rows shown and the warnings given."""
    index: str
    rows: list
    figures: dict
    warnings: list = field(default_factory=list)


def _number(value):
    """A finite positive float, else None (a damaged figure is left out, never shown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def collect_models(root=None, pattern=None):
    """One row per model: the zoo's (built-in and user) and the gluoncv peers, optionally
    filtered by a wildcard ``pattern``; each with its counts, MicroNet scores and accuracy."""
    import fnmatch
    names = registry.list_models(root=root) + list(GLUONCV_PEERS)
    rows = []
    for name in names:
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        rows.append(_peer_row(name) if name in GLUONCV_PEERS else _zoo_row(name, root))
    return rows


def _zoo_row(name, root):
    card = registry.get_card(name, root)
    info = registry.model_info(name, root=root)
    measured = info.get('measured_top1') or {}
    row = _base_row(name, card.source, card.description, info.get('input_size'))
    row.update(arch=str(card.arch) if card.arch is not None else None,
               classes=info.get('classes'), flops=info.get('flops'), params=info.get('params'),
               published_top1=card.published_top1,
               published_source=BUILTIN_SOURCE if card.published_top1 is not None else None,
               measured_top1=(100 * measured['top1'] if _number(measured.get('top1'))
                              else None),
               measured_data=measured.get('data'), search=info.get('search'))
    try:
        path = store.get_model_file(name, root)
        row['weights'] = {'file': os.path.basename(path), 'sha1': store.sha1_of(path)}
    except WeightsError as err:
        row['weights'] = {'missing': str(err)}
    if card.arch is not None:
        _score(row, registry.build_from_card(card))
    return row


def _peer_row(name):
    net = load_model(name, RANDOM).net  # counting does not depend on the weights
    row = _base_row(name, 'gluoncv', 'gluoncv model zoo network (the benchmark\'s peer)', 224)
    counts = count_net(net, (1, 3, 224, 224))
    row.update(classes=1000, flops=counts.flops, params=counts.params,
               published_top1=GLUONCV_PEERS[name], published_source=GLUONCV_SOURCE)
    _score(row, net)
    return row


def _base_row(name, source, description, input_size):
    return {'name': name, 'source': source, 'description': description,
            'input_size': input_size, 'arch': None, 'classes': None, 'flops': None,
            'params': None, 'micronet_fp32': None, 'micronet_int8': None,
            'micronet_int8_from': None, 'published_top1': None, 'published_source': None,
            'measured_top1': None, 'measured_data': None, 'latency': {}, 'weights': None,
            'search': None, 'pareto_plot': None, 'block_plot': None}


def _score(row, net):
    """MicroNet at 32 bit, and the 8-bit scenario until an INT8 graph's score replaces it."""
    shape = (1, 3, row['input_size'], row['input_size'])
    row['micronet_fp32'] = micronet_score(net, shape, bits=32).score
    row['micronet_int8'] = micronet_score(net, shape, bits=8).score
    row['micronet_int8_from'] = '8-bit scenario of the float graph'


def read_results(path):
    """Latency (median ms per runtime and batch) and MicroNet scores per model from a
    ``bench/run_all.py`` result, with where and when it was measured.

    Returns ``(figures, warning)``: a damaged file gives ``(None, one-line warning)``.
    """
    try:
        with open(path) as handle:
            deployment = json.load(handle)['deployment']
        models, machine = deployment['models'], deployment.get('machine', {})
        if not isinstance(models, dict) or not isinstance(machine, dict):
            raise TypeError('models is not a mapping')
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, ('results file %s is damaged or unreadable (%s); the page is written '
                      'without its figures' % (path, err))
    figures = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            continue
        latency = {}
        for runtime in RUNTIME_LABELS:
            timings = entry.get(runtime) if isinstance(entry.get(runtime), dict) else {}
            for batch in BATCHES:
                cell = timings.get('b%d' % batch)
                value = _number(cell.get('median_ms')) if isinstance(cell, dict) else None
                if value is not None:
                    latency.setdefault(runtime, {})['b%d' % batch] = value
        figures[name] = {'latency': latency, 'micronet_fp32': _number(entry.get('micronet_fp32')),
                         'micronet_int8': _number(entry.get('micronet_ort_int8'))}
    when = machine.get('date') or datetime.datetime.fromtimestamp(
        os.path.getmtime(path), datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC (file time)')
    return {'models': figures, 'where': {
        'source': 'read from %s' % os.path.abspath(path), 'cpu': machine.get('cpu', '?'),
        'threads': machine.get('threads'), 'when': when,
        'load_average': machine.get('load_average'),
        'input_size': deployment.get('input_size')}}, None


def measure_latency(rows, root=None, threads=2, runs=20, progress=None):
    """Time every row that has a fixed architecture as ``nas-export --onnx`` and ``nas-quantize
    --backend onnxruntime`` deploy it, at batch 1 and 32, with
    ``profiling.deploy.measure_deployed`` (the project's timing worker and reference probe).

    ``progress(total)`` may return an object whose ``update(1)`` is called as each model's
    timing at one batch size completes. Returns the figures in ``read_results``' form.
    """
    from profiling.deploy import measure_deployed
    check_counts(runs, 0, threads)
    targets = [row for row in rows if row['source'] == 'gluoncv' or row['arch']]
    bar = progress(len(targets) * len(MEASURED) * len(BATCHES)) if progress else None
    figures = {row['name']: {'latency': {}, 'micronet_fp32': None, 'micronet_int8': None}
               for row in targets}
    jobs = [(row, batch) for row in targets for batch in BATCHES]
    for key, (runtime, precision) in MEASURED.items():
        items = ((_timing_net(row, root), (batch, 3, row['input_size'], row['input_size']))
                 for row, batch in jobs)
        results = measure_deployed(items, runtime, precision, threads, runs=runs, warmup=2,
                                   chunks=min(4, runs),
                                   on_result=lambda *_: bar and bar.update(1))
        for (row, batch), result in zip(jobs, results):
            figures[row['name']]['latency'].setdefault(key, {})['b%d' % batch] = \
                result.timing.median_ms
    return {'models': figures, 'where': {
        'source': 'measured by nas-zoo page --measure', 'cpu': cpu_model(), 'threads': threads,
        'when': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'load_average': [round(v, 2) for v in os.getloadavg()], 'input_size': None}}


def _timing_net(row, root):
    """The row's network with its stored weights, else unit-scale random ones: speed does not
    depend on the values, but tiny activations would take denormal slow paths."""
    import mxnet as mx
    loaded = load_model(row['name'], root=root)
    if loaded.weights:
        return loaded.net
    net = loaded.net
    net(mx.nd.zeros((1, 3, row['input_size'], row['input_size'])))  # infer deferred shapes
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2),
                   force_reinit=True)
    return net


def _merge(rows, figures):
    for row in rows:
        found = figures['models'].get(row['name']) if figures else None
        if not found:
            continue
        row['latency'] = found['latency']
        if found.get('micronet_fp32') is not None:
            row['micronet_fp32'] = found['micronet_fp32']
        if found.get('micronet_int8') is not None:
            row['micronet_int8'] = found['micronet_int8']
            row['micronet_int8_from'] = 'onnxruntime INT8 graph at its own bit widths'


def check_output_dir(out_dir):
    """Refuse a folder that holds anything but a previous page: nothing else is overwritten."""
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or (
            os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MARKER)))):
        raise OutputError('%s exists and is not a previous zoo page (no %s in it); choose a new '
                          'or empty folder' % (out_dir, MARKER))


def write_zoo_page(out_dir, root=None, results=None, pattern=None, measure=False, threads=2,
                   runs=20, block_plots=None, progress=None):
    """Write the page into ``out_dir`` (new, empty or a previous page, replaced as a whole).

    ``results``: a benchmark result to read (default ``bench/results.json`` when it exists);
    ``measure``: time the models here instead; ``block_plots``: ``{name: PNG}`` of per-block
    latency plots to show on the model cards. Returns a PageResult.
    """
    check_output_dir(out_dir)
    warnings = []
    rows = collect_models(root, pattern)
    if measure:
        figures = measure_latency(rows, root, threads, runs, progress=progress)
    else:
        path = results or (DEFAULT_RESULTS if os.path.isfile(DEFAULT_RESULTS) else None)
        figures, warning = read_results(path) if path else (None, None)
        warnings += [warning] if warning else []
    _merge(rows, figures)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.zoo_page-', dir=parent)
    try:
        write_page_files(staging, rows, figures and figures['where'], warnings,
                         block_plots or {})
        _replace_dir(staging, out_dir)
    except OSError as err:
        raise OutputError('cannot write %s: %s' % (out_dir, err.strerror or err)) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PageResult(os.path.join(out_dir, 'index.html'), rows, figures, warnings)


def _replace_dir(staging, out_dir):
    """Swap the finished folder in; a previous page is removed only after the swap."""
    os.chmod(staging, 0o755)
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix='.zoo_page-old-', dir=os.path.dirname(
            os.path.abspath(out_dir)))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
