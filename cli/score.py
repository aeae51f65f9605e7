"""``nas-score``: FLOPs/params (SPEC §6.1), the Σ normalised score (§6.3) and the MicroNet score
(§6.4) of a zoo model, an architecture JSON, a gluoncv model or an ONNX file."""
import json

import click

from cli.common import INPUT_SIZE, Group, json_option, root_option, weights_options
from nas.atomic import write_csv
from nas.counting import count_model
from quantization.report import read_record
from zoo import load_model
from nas.normalized import REFERENCE_MODELS, normalized_score
from profiling.scores import CONVENTIONS, micronet_score

__all__ = ['main', 'SEED_FIGURES']

# The seed table's rounded (FLOPs, params), from which its Σ column was computed (SPEC §6.3, P7)
SEED_FIGURES = {
    'oneshot_s_plus': (291e6, 3.5e6),
    'oneshot_plus': (297e6, 3.7e6),
    'oneshot': (328e6, 3.4e6),
    'mobilenetv3_large': (217e6, 5.4e6),
    'mobilenetv2_1.4': (585e6, 6.9e6),
}


@click.group(cls=Group)
def main():
    """Count FLOPs/params and score models (SPEC §6 conventions).

    MODEL is a zoo or user-zoo name, an architecture JSON, a gluoncv model name or an .onnx file.
    """


def _model_argument(func):
    func = weights_options(click.argument('model')(func))
    func = root_option(func)
    return click.option('--input-size', type=INPUT_SIZE, default=None,
                        help='Input H = W (default: the model\'s own, 224 for gluoncv; needed '
                             'for ONNX files with dynamic spatial dims).')(func)


def _load(model, weights, input_size, root=None):
    """(network or ONNX path, input shape or None) for a MODEL argument."""
    loaded = load_model(model, weights, root=root, input_size=input_size, onnx=True)
    size = loaded.input_size
    return loaded.onnx or loaded.net, (3, size, size) if size else None


def _shape_text(shape):
    return 'x'.join(map(str, shape[1:])) if shape else '?'


@main.command('flops')
@_model_argument
@json_option
@click.option('--per-layer', is_flag=True, help='Print every counted layer.')
@click.option('--csv', 'csv_path', type=click.Path(dir_okay=False, writable=True),
              default=None, help='Write the per-layer table to this CSV file.')
def flops_command(model, weights, input_size, root, as_json, per_layer, csv_path):
    """FLOPs (multiply-accumulates + bias and pooling adds) and params of MODEL (SPEC §6.1)."""
    net, shape = _load(model, weights, input_size, root)
    report = count_model(net, shape)
    if csv_path:
        write_csv(csv_path, ['name', 'op_type', 'out_shape', 'flops', 'params'],
                  [[row.name, row.op_type, _shape_text(row.out_shape), row.flops, row.params]
                   for row in report.layers])
    if as_json:
        data = {'model': model, 'input_shape': list(shape) if shape else None,
                'flops': report.flops, 'params': report.params}
        if per_layer:
            data['layers'] = [dict(name=r.name, op_type=r.op_type, out_shape=list(r.out_shape),
                                   flops=r.flops, params=r.params) for r in report.layers]
        click.echo(json.dumps(data, indent=2))
        return
    if per_layer:
        click.echo('%-56s %-18s %-14s %14s %10s' % ('layer', 'op', 'output', 'FLOPs', 'params'))
        for r in report.layers:
            click.echo('%-56s %-18s %-14s %14s %10s' % (r.name, r.op_type,
                                                        _shape_text(r.out_shape),
                                                        '{:,}'.format(r.flops),
                                                        '{:,}'.format(r.params)))
    click.echo('model   %s (input %s)' % (model, _shape_text((1,) + shape) if shape else
                                          'as in the ONNX graph'))
    click.echo('FLOPs   {:,} ({:.6f}M)'.format(report.flops, report.flops / 1e6))
    click.echo('params  {:,} ({:.6f}M)'.format(report.params, report.params / 1e6))


@main.command('normalized')
@_model_argument
@click.option('--ref', default='SinglePathOneShot', show_default=True,
              help='Comparison model: %s.' % ', '.join(REFERENCE_MODELS))
@json_option
def normalized_command(model, weights, input_size, root, ref, as_json):
    """Σ = FLOPs/F_ref + params/P_ref of MODEL from exact counts (SPEC §6.3)."""
    net, shape = _load(model, weights, input_size, root)
    report = count_model(net, shape)
    score = normalized_score(report.flops, report.params, ref)
    # the seed figures are for the standard 224x224 input
    seed = SEED_FIGURES.get(model.lower()) if shape == (3, 224, 224) else None
    seed_score = normalized_score(seed[0], seed[1], ref) if seed else None
    if as_json:
        click.echo(json.dumps({
            'model': model, 'ref': ref, 'ref_flops': REFERENCE_MODELS[ref][0],
            'ref_params': REFERENCE_MODELS[ref][1], 'flops': report.flops,
            'params': report.params, 'score': score,
            'seed': {'flops': seed[0], 'params': seed[1], 'score': seed_score} if seed else None,
        }, indent=2))
        return
    ref_flops, ref_params = REFERENCE_MODELS[ref]
    click.echo('model   %s: FLOPs {:,}, params {:,}'.format(report.flops, report.params)
               % model)
    click.echo('ref     %s: %gM FLOPs, %gM params' % (ref, ref_flops / 1e6, ref_params / 1e6))
    click.echo('score   %.4f (exact counts)' % score)
    if seed:
        click.echo('seed    %.4f (seed table, from its rounded %gM / %gM; not exact)'
                   % (seed_score, seed[0] / 1e6, seed[1] / 1e6))


@main.command('micronet')
@_model_argument
@click.option('--bits', type=click.Choice([32, 16, 8]), default=None,
              help='Scenario 32, 16 or 8 for a float model (default 16, the MicroNet freebie); a '
                   'quantized ONNX file is scored at the widths in its graph.')
@click.option('--count-shuffle', is_flag=True,
              help='Charge each channel shuffle of C channels as a sparse 1x1 conv: C nonzero '
                   'weights (scaled like conv weights) + a C*C 1-bit mask, each entry 1/32 of a '
                   'param at every bit width (challenge rules), and 1 mult per output element.')
@click.option('--convention', type=click.Choice(CONVENTIONS), default='challenge',
              show_default=True,
              help="'reference' counts as the reference's own MicroNet table did, to reproduce "
                   'its 1.03 for OneShot-S+ at 32 bit: the shuffle counted, each mask entry 1/16 '
                   'of a param (1 bit against a 16-bit base), a BN after a conv charged '
                   'nothing, and int8 additions at 8 bit.')
@click.option('--quant-record', type=click.Path(dir_okay=False), default=None,
              help='A *.quant.json written by nas-quantize (e.g. of an MXNet INT8 export): score '
                   'MODEL, the float model it was made from, at the bit widths it records.')
@json_option
def micronet_command(model, weights, input_size, root, bits, count_shuffle, convention,
                     quant_record, as_json):
    """MicroNet challenge score of MODEL: params/6.9M + (mults + adds)/1170M (SPEC §6.4)."""
    net, shape = _load(model, weights, input_size, root)
    record = read_record(quant_record) if quant_record else None
    if record is not None and bits is not None:
        raise click.UsageError('--bits and --quant-record exclude each other: a record gives '
                               'the bit widths')

    def score(scenario):
        return micronet_score(net, shape, bits=scenario, count_shuffle=count_shuffle,
                              quant_record=record, convention=convention)
    report = score(bits)
    # a float model is shown in every scenario; a quantized graph has its own widths only
    scenarios = [report] if report.bits == 'graph' else [
        report if report.bits == b else score(b) for b in (32, 16, 8)]
    if as_json:
        data = _report_dict(report)
        data.update(model=model, count_shuffle=count_shuffle, convention=convention,
                    conventions=report.conventions.splitlines(),
                    scenarios={str(r.bits): _report_dict(r) for r in scenarios})
        click.echo(json.dumps(data, indent=2))
        return
    click.echo('MicroNet score of %s (input %s)' % (model, _shape_text((1,) + shape)
                                                   if shape else 'as in the ONNX graph'))
    click.echo('conventions:')
    for line in report.conventions.splitlines():
        click.echo('  ' + line)
    click.echo('%-9s %16s %16s %16s %9s' % ('bits', 'params', 'mults', 'adds', 'score'))
    if report.bits == 'graph':  # what the graph would cost with every value at 32 bit
        click.echo('%-9s %16s %16s %16s %9s' % ('raw', _number(report.raw_params),
                                                _number(report.raw_mults),
                                                _number(report.raw_adds), ''))
    for r in scenarios:
        label = str(r.bits) + (' *' if r.bits == report.bits else '')
        click.echo('%-9s %16s %16s %16s %9.4f' % (label, _number(r.params), _number(r.mults),
                                                  _number(r.adds), r.score))
    click.echo('* the score reported: %.4f' % report.score)


def _report_dict(report):
    return {'bits': report.bits, 'score': report.score, 'params': report.params,
            'mults': report.mults, 'adds': report.adds, 'raw_params': report.raw_params,
            'raw_mults': report.raw_mults, 'raw_adds': report.raw_adds}


def _number(value):
    """Counts are fractional once scaled by bit width; print them with 2 decimals only then."""
    return '{:,}'.format(int(value)) if value == int(value) else '{:,.2f}'.format(value)
