"""``nas-export``: write a zoo model, a searched model or an architecture JSON as ONNX or as an
MXNet symbol + params pair, BatchNorm merged and the graph made fast for deployment."""
import os

import click

from cli.common import BATCH, INPUT_SIZE, Command, root_option, weights_options
from export.onnx import ONNX_CHANNEL_BLOCK
from nas.errors import ExportError

_SIZE_MULTIPLE = 32  # five stride-2 stages (SPEC §1.1)


def _load_net(model, weights=None, input_size=224, root=None):
    """The network named by ``model`` with its ``weights`` (``zoo.load_model``), ready to trace
    at ``input_size``."""
    import zoo
    if input_size < _SIZE_MULTIPLE or input_size % _SIZE_MULTIPLE:
        raise ExportError('input size %d is not a multiple of %d; use e.g. 224'
                          % (input_size, _SIZE_MULTIPLE))
    if model in zoo.list_models(root=root) and zoo.get_card(model, root).arch is None:
        raise ExportError('%s is the supernet, which has no fixed architecture; extract a subnet '
                          '(nas.subnet.extract_subnet) and export its architecture JSON with '
                          '--params' % model)
    return zoo.load_model(model, weights, root=root, input_size=input_size).net


def _shape(shape):
    return '(%s)' % ', '.join(str(d) for d in shape)


@click.command(cls=Command)
@click.option('--onnx', 'onnx_model', metavar='MODEL', help='Export MODEL to ONNX.')
@click.option('--mxnet', 'mxnet_model', metavar='MODEL',
              help='Export MODEL as PREFIX-symbol.json + PREFIX-0000.params.')
@click.option('-o', '--output', required=True,
              help='ONNX file (--onnx) or file prefix (--mxnet).')
@weights_options
@click.option('--input-size', default=224, show_default=True, type=INPUT_SIZE,
              help='Input height and width (a multiple of 32).')
@click.option('--batch-size', default=None, type=BATCH,
              help='Fixed batch size of the graph [default: 1].')
@click.option('--dynamic-batch', is_flag=True, help='Leave the batch size free (named N).')
@click.option('--opset', default=13, show_default=True, type=click.IntRange(min=1),
              help='ONNX opset.')
@click.option('--merge-bn/--no-merge-bn', default=True, show_default=True,
              help='Fold BatchNorm into the convolutions first.')
@click.option('--shuffle', 'shuffle_form', default='slices', show_default=True,
              type=click.Choice(['slices', 'gather', 'reshape']),
              help='Form of the channel shuffle in the ONNX graph (slices is the fastest).')
@click.option('--channel-block', default=ONNX_CHANNEL_BLOCK, show_default=True,
              type=click.IntRange(0, 256),
              help='Pad channel counts to multiples of this with zero-weight channels, for '
                   "onnxruntime's and oneDNN's blocked layouts (0: no padding).")
@click.option('--optimize/--no-optimize', default=True, show_default=True,
              help='--mxnet: write the deployment graph (channel shuffle in the weights, oneDNN '
                   'fusion); --no-optimize writes the graph as traced.')
@root_option
def main(onnx_model, mxnet_model, output, weights, input_size, batch_size,
         dynamic_batch, opset, merge_bn, shuffle_form, channel_block, optimize, root):
    """Export a model for deployment (MODEL: zoo name, user-zoo name or architecture JSON)."""
    if bool(onnx_model) == bool(mxnet_model):
        raise click.UsageError('give exactly one of --onnx MODEL and --mxnet MODEL')
    if batch_size is not None and dynamic_batch:
        raise click.UsageError('--batch-size and --dynamic-batch exclude each other')
    from export.merge_bn import merge_bn as fold
    if onnx_model:
        from export.onnx import check_opset
        check_opset(opset)  # before the minutes of work below
    net = _load_net(onnx_model or mxnet_model, weights, input_size, root)
    shape = (batch_size or 1, 3, input_size, input_size)
    if merge_bn:
        net = fold(net, shape)
    if onnx_model:
        from export.onnx import export_onnx
        report = export_onnx(net, output, shape, opset=opset, dynamic_batch=dynamic_batch,
                             shuffle=shuffle_form, channel_block=channel_block)
        click.echo('wrote %s (%.1f MB, opset %d, %d nodes)'
                   % (report.path, report.size_bytes / 1e6, report.opset, report.node_count))
        click.echo('passed: %s' % ', '.join(report.checks))
        for kind, values in (('input', report.inputs), ('output', report.outputs)):
            for name, dims in values.items():
                click.echo('%-6s %s %s' % (kind, name, _shape(dims)))
        return
    from export.mxnet_symbol import export_mxnet, trace
    if optimize:
        from export.deploy import export_deploy
        paths, report = export_deploy(net, output, shape, channel_block=channel_block)
        click.echo('deployment graph: %d operators as traced, %d written (%d fused convolutions)'
                   % (sum(report.ops_before.values()), sum(report.ops_after.values()),
                      report.fused_convs))
    else:
        paths = export_mxnet(net, output, shape)
    sym, _ = trace(net, shape)
    _, out_shapes, _ = sym.infer_shape(data=shape)
    for path in paths:
        click.echo('wrote %s (%.1f MB)' % (path, os.path.getsize(path) / 1e6))
    click.echo('input  data %s' % _shape(shape))
    for name, dims in zip(sym.list_outputs(), out_shapes):
        click.echo('output %s %s' % (name, _shape(dims)))
    click.echo('load with mx.gluon.SymbolBlock.imports(%r, [\'data\'], %r)' % paths)
