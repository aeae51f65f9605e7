"""The product end to end on one dataset: train a supernet, search it under a FLOPs limit, train
the winner, put it in the zoo, merge BN, export ONNX, quantize to INT8, profile op by op, score
it, and write a Markdown report whose every number comes from this run.
"""
import json
import logging
import os
import time
from dataclasses import dataclass, asdict


from export.merge_bn import merge_bn
from export.onnx import export_onnx
from nas.atomic import write_text
from nas.data import open_dataset
from nas.constraints import Constraints
from nas.search import SearchConfig
from nas.sampler import UniformSampler
from nas.search_run import search_supernet
from nas.space import Arch, SearchSpace
from nas.train import TrainConfig, train_subnet, train_supernet
from quantization.pipeline import quantize_model
from quantization.report import read_record
from zoo import PRETRAINED, import_weights, load_model, register_model
from profiling.op_by_op import profile_op_by_op
from profiling.plots import plot_block_times
from profiling.scores import micronet_score
from profiling.verify import predict_and_measure
from profiling.zoo_page import write_zoo_page

__all__ = ['DemoConfig', 'run_demo']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults finish in well under 20 minutes on 2 CPU cores."""
    data: str = 'digits'
    input_size: int = 32
    supernet_epochs: int = 8
    subnet_epochs: int = 10
    batch_size: int = 32
    max_flops: float = 6e6
    population: int = 12
    generations: int = 4
    elite: int = 4
    recalib_batches: int = 4
    num_calib: int = 256
    profile_runs: int = 30
    latency_runs: int = 20
    threads: int = 2
    seed: int = 0
    name: str = 'demo_searched'
    # 'channel' searches channel widths on the OneShot-S+ blocks; 'joint' also samples blocks,
    # which needs many more supernet steps than a CPU demo has (see README, Search)
    mode: str = 'channel'
    fixed_blocks: tuple = (0, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0, 1, 2, 2, 1, 2, 0, 0, 2, 0)


class _Steps:
    """Runs named steps in order, reporting each to ``progress`` and timing it."""

    def __init__(self, progress):
        self.progress = progress or (lambda message: None)
        self.seconds = {}

    def __call__(self, name, func, *args, **kwargs):
        self.progress('[%s] started' % name)
        start = time.time()
        result = func(*args, **kwargs)
        self.seconds[name] = round(time.time() - start, 1)
        self.progress('[%s] done in %.1f s' % (name, self.seconds[name]))
        return result


def run_demo(out_dir, config=DemoConfig(), progress=None, show_bars=True):
    """Run every step into ``out_dir`` and return the summary dict (also ``summary.json``)."""
    os.makedirs(out_dir, exist_ok=True)
    root = os.path.join(out_dir, 'store')
    step = _Steps(progress)
    size = config.input_size
    train_set = open_dataset(config.data, 'train', size, config.seed)
    val_set = open_dataset(config.data, 'val', size, config.seed)
    space = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=size,
                        classes=len(train_set.classes))
    common = dict(batch_size=config.batch_size, seed=config.seed, val_paths=2,
                  recal_images=config.recalib_batches * config.batch_size)

    supernet_dir = os.path.join(out_dir, 'supernet')
    supernet_cfg = TrainConfig(epochs=config.supernet_epochs, lr=0.05, wd=4e-5,
                               warmup_epochs=0.5, **common)
    fixed = dict(fixed_blocks=config.fixed_blocks) if config.mode == 'channel' else {}
    sampler = UniformSampler(space, mode=config.mode, seed=config.seed, **fixed)
    supernet_run = step('train supernet', train_supernet, space, train_set, val_set,
                        supernet_dir, supernet_cfg, sampler=sampler, progress=show_bars)

    search_dir = os.path.join(out_dir, 'search')
    search_cfg = SearchConfig(strategy='genetic', space=config.mode,
                              population=config.population, generations=config.generations,
                              elite=config.elite, seed=config.seed, **fixed)
    top, search_summary = step('search', search_supernet, supernet_dir, search_dir, search_cfg,
                               Constraints(max_flops=config.max_flops), data=config.data,
                               batch_size=config.batch_size,
                               recalib_batches=config.recalib_batches)
    winner = Arch.parse(top[0].arch, space)

    subnet_dir = os.path.join(out_dir, 'winner')
    subnet_cfg = TrainConfig(epochs=config.subnet_epochs, lr=0.05, wd=3e-5,
                             warmup_epochs=0.5, **common)
    subnet_run = step('train winner', train_subnet, winner, train_set, val_set, subnet_dir,
                      subnet_cfg, progress=show_bars)
    register_model(config.name, winner, root=root, overwrite=True,
                   description='searched by the demo', extra={
                       'search': dict(asdict(top[0]), search_dir=os.path.abspath(search_dir)),
                       'measured_top1': {'top1': subnet_run.val_top1, 'data': config.data}})
    step('import weights', import_weights, config.name,
         os.path.join(subnet_dir, 'model.params'), root=root)
    net = load_model(config.name, PRETRAINED, root=root).net

    shape = (1, 3, size, size)
    onnx_path = os.path.join(out_dir, '%s.onnx' % config.name)
    merged = step('merge BN', merge_bn, net, shape)
    export_report = step('export ONNX', export_onnx, merged, onnx_path, shape, opset=13,
                         dynamic_batch=True)
    quant = {}
    for backend, output in (('onnxruntime', os.path.join(out_dir, '%s.int8.onnx'
                                                           % config.name)),
                            ('mxnet', os.path.join(out_dir, '%s_int8' % config.name))):
        quant[backend] = step('quantize %s' % backend, _quantize, backend, config, root, output,
                              os.path.join(subnet_dir, 'model.params'))
    profile = step('profile op by op', profile_op_by_op, net, input_size=size,
                   runtime='onnxruntime', threads=config.threads, runs=config.profile_runs,
                   model_name=config.name)
    plot_block_times(profile, os.path.join(out_dir, 'latency_per_block.png'))
    latency_check = step('predict and measure latency', predict_and_measure, winner,
                         threads=config.threads, runs=config.latency_runs)
    page = step('zoo page', write_zoo_page, os.path.join(out_dir, 'zoo_page'), root=root,
                block_plots={config.name: os.path.join(out_dir, 'latency_per_block.png')})
    scores = {bits: micronet_score(net, shape, bits=bits).score for bits in (32, 16, 8)}
    scores['int8_onnx'] = micronet_score(quant['onnxruntime']['files'][0]).score
    mxnet_record = read_record(next(path for path in quant['mxnet']['files']
                                    if path.endswith('.quant.json')))
    scores['int8_mxnet'] = micronet_score(net, shape, quant_record=mxnet_record).score

    flops, params = top[0].costs['flops'], top[0].costs['params']  # from the search's table
    summary = {
        'config': asdict(config), 'seconds': step.seconds, 'space': space.key(),
        'supernet': {'epochs': len(supernet_run.epochs), 'val_top1': supernet_run.val_top1},
        'search': dict(search_summary, top=[asdict(c) for c in top]),
        'winner': {'name': config.name, 'arch': str(winner), 'flops': flops, 'params': params,
                   'val_top1': subnet_run.val_top1},
        'export': {'path': export_report.path, 'opset': export_report.opset,
                   'size_bytes': export_report.size_bytes},
        'quantization': {k: _quant_summary(v) for k, v in quant.items()},
        'latency_ms': {'median': profile.latency.median_ms, 'op_sum': profile.op_sum_ms,
                       'predicted': latency_check['predicted_ms'],
                       'measured': latency_check['median_ms']},
        'micronet': scores,
        'zoo_page': page.index,
    }
    with open(os.path.join(out_dir, 'summary.json'), 'w') as handle:
        json.dump(summary, handle, indent=2, default=str)
    _write_report(out_dir, summary)
    return summary


def _quantize(backend, config, root, output, params):
    result = quantize_model(config.name, backend, config.data, output, root=root, weights=params,
                            input_size=config.input_size, num_calib=config.num_calib,
                            eval_data=config.data)
    return result.to_dict()


def _quant_summary(result):
    quant, evaluation = result['quantization'], result['evaluation']
    return {'coverage': '%d/%d' % (quant['num_int8_convs'], quant['num_convs']),
            'top1_fp32': evaluation['top1_fp32'], 'top1_int8': evaluation['top1_int8'],
            'size_fp32_bytes': evaluation['size_fp32_bytes'],
            'size_int8_bytes': evaluation['size_int8_bytes'], 'files': result['files']}


def _write_report(out_dir, s):
    win, q = s['winner'], s['quantization']
    lines = [
        '# oneshot-nas demo report', '',
        'Every number below was produced by this run (`summary.json` has them all).', '',
        '## Supernet training', '',
        'Epochs: %d; sampled-path top-1 after BN recalibration: %s' % (
            s['supernet']['epochs'], _pct(s['supernet']['val_top1'])), '',
        '![supernet training curve](supernet/curve.png)', '',
        '## Search (genetic, FLOPs <= %.2fM)' % (s['config']['max_flops'] / 1e6), '',
        'Evaluated %d candidates in %.1f s; best `%s` at %s supernet top-1.' % (
            s['search']['evaluated'], s['search']['seconds'], s['search']['best'],
            _pct(s['search']['best_top1'])), '',
        '![Pareto front](search/pareto.png)', '',
        '## Winner `%s`' % win['name'], '',
        '| arch | FLOPs | params | val top-1 (trained from scratch) |', '|---|---|---|---|',
        '| `%s` | %s | %s | %s |' % (win['arch'], format(win['flops'], ','),
                                     format(win['params'], ','), _pct(win['val_top1'])), '',
        '![winner training curve](winner/curve.png)', '',
        '## Deployment', '',
        'ONNX: `%s` (opset %d, %s bytes).' % (os.path.basename(s['export']['path']),
                                              s['export']['opset'],
                                              format(s['export']['size_bytes'], ',')), '',
        '| backend | int8 convs | top-1 FP32 | top-1 INT8 | size FP32 | size INT8 |',
        '|---|---|---|---|---|---|']
    for backend, row in q.items():
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            backend, row['coverage'], _pct(row['top1_fp32']), _pct(row['top1_int8']),
            format(row['size_fp32_bytes'], ','), format(row['size_int8_bytes'], ',')))
    lines += ['', '## Latency (onnxruntime, batch 1, %d threads)' % s['config']['threads'], '',
              'End-to-end median %.3f ms; per-op sum %.3f ms.' % (
                  s['latency_ms']['median'], s['latency_ms']['op_sum']), '',
              '![latency per block](latency_per_block.png)', '',
              'Latency table prediction %.3f ms vs measured median %.3f ms (deployed graph, '
              'prediction rescaled by the probe): %+.1f %%.' % (
                  s['latency_ms']['predicted'], s['latency_ms']['measured'],
                  100 * (s['latency_ms']['predicted'] / s['latency_ms']['measured'] - 1)), '',
              'The zoo page, with the winner beside the zoo and its peers: '
              '[zoo_page/index.html](zoo_page/index.html)', '',
              '## MicroNet score', '',
              '| 32-bit | 16-bit | 8-bit (scenario) | INT8 ONNX (from its graph) | '
              'MXNet INT8 (from its record) |', '|---|---|---|---|---|',
              '| %.4f | %.4f | %.4f | %.4f | %.4f |' % (
                  s['micronet'][32], s['micronet'][16], s['micronet'][8],
                  s['micronet']['int8_onnx'], s['micronet']['int8_mxnet']),
              '', '## Step times (s)', '']
    lines += ['- %s: %.1f' % (k, v) for k, v in s['seconds'].items()]
    write_text(os.path.join(out_dir, 'report.md'), '\n'.join(lines) + '\n')


def _pct(value):
    return '-' if value is None else '%.2f %%' % (100 * value)
