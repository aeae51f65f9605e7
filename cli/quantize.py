"""``nas-quantize``: INT8 post-training quantization with MXNet or onnxruntime, accuracy shown."""
import json

import click

from cli.common import (BATCH, COUNT, INPUT_SIZE, Command, json_option,
                        root_option, weights_options)
from nas.errors import QuantizationError
from quantization.calib import MXNET_CALIB_MODES, ORT_CALIB_METHODS
from quantization.mxnet_int8 import QUANTIZED_DTYPES
from quantization.ort_int8 import ACTIVATION_TYPES, QUANT_FORMATS, WEIGHT_TYPES
from quantization.pipeline import BACKENDS, quantize_model


class _Progress:
    """A tqdm bar over calibration images, opened at the first batch (so that an early error
    prints only its one line)."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.bar = total, enabled, None

    def __call__(self, count):
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc='calibration', unit='img', leave=False)
        self.bar.update(count)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@click.command(cls=Command)
@click.argument('model')
@click.option('--backend', type=click.Choice(BACKENDS), required=True)
@click.option('--calib-data', required=True,
              help="Calibration images: 'digits', an image folder, a .rec file, or a .npy array "
                   "of preprocessed N x C x H x W images.")
@click.option('-o', '--output', required=True,
              help='Output: a file prefix (mxnet) or an .onnx path (onnxruntime).')
@weights_options
@click.option('--input-size', type=INPUT_SIZE, help='Image size (default: the model\'s).')
@click.option('--num-calib', type=COUNT, default=320, show_default=True,
              help='Calibration images.')
@click.option('--calib-mode', type=click.Choice(MXNET_CALIB_MODES),
              help='mxnet calibration [default: naive].')
@click.option('--calibrate', type=click.Choice(ORT_CALIB_METHODS),
              help='onnxruntime calibration [default: minmax].')
@click.option('--exclude', multiple=True, metavar='LAYER_PATTERN',
              help='Keep layers whose name matches (wildcards allowed) in FP32; repeatable.')
@click.option('--keep-first-last/--quantize-first-last', default=None,
              help='Keep the first conv and the classifier FP32 [default: keep on mxnet, '
                   'quantize on onnxruntime].')
@click.option('--per-channel/--per-tensor', default=True, show_default=True,
              help='onnxruntime weight scales.')
@click.option('--activation-type', type=click.Choice(ACTIVATION_TYPES), default='uint8',
              show_default=True, help='onnxruntime activations.')
@click.option('--weight-type', type=click.Choice(WEIGHT_TYPES), default='int8',
              show_default=True, help='onnxruntime weights.')
@click.option('--format', 'quant_format', type=click.Choice(QUANT_FORMATS), default='qdq',
              show_default=True, help='onnxruntime graph format.')
@click.option('--quantized-dtype', type=click.Choice(QUANTIZED_DTYPES), default='int8',
              show_default=True, help='mxnet activations.')
@click.option('--batch-size', type=BATCH, default=1, show_default=True,
              help='Batch dimension of the ONNX model exported from MODEL.')
@click.option('--opset', type=click.IntRange(min=1), default=13, show_default=True,
              help='ONNX opset of that export.')
@click.option('--eval', 'eval_data', help='Evaluate FP32 vs INT8 on the val split of this data.')
@click.option('--eval-images', type=COUNT,
              help='Evaluate on a random subset of this many images.')
@root_option
@json_option
@click.option('--quiet', is_flag=True, help='No progress bar.')
def main(model, backend, calib_data, output, weights, input_size, num_calib, calib_mode, calibrate,
         exclude, keep_first_last, per_channel, activation_type, weight_type, quant_format,
         quantized_dtype, batch_size, opset, eval_data, eval_images, root, as_json, quiet):
    """Quantize MODEL (zoo name, architecture JSON, or FP32 .onnx for onnxruntime) to INT8."""
    if backend == 'mxnet':
        if calibrate:
            raise QuantizationError('--calibrate is for --backend onnxruntime; use --calib-mode')
        calib_method, options = calib_mode, {'quantized_dtype': quantized_dtype}
    else:
        if calib_mode:
            raise QuantizationError('--calib-mode is for --backend mxnet; use --calibrate')
        calib_method = calibrate
        options = dict(per_channel=per_channel, activation_type=activation_type,
                       weight_type=weight_type, quant_format=quant_format)
    progress = _Progress(num_calib, not (quiet or as_json))
    try:
        result = quantize_model(model, backend, calib_data, output, weights=weights,
                                input_size=input_size, num_calib=num_calib,
                                calib_method=calib_method, exclude=exclude,
                                keep_first_last=keep_first_last, eval_data=eval_data,
                                eval_images=eval_images, batch_size=batch_size, opset=opset,
                                root=root, on_batch=progress, **options)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print(result)


def _print(result):
    report, evaluation = result.report, result.evaluation
    errors = {layer.name: layer for layer in evaluation.layers} if evaluation else {}
    click.echo('%-56s %-5s %9s %8s  %s' % ('conv', 'dtype', 'cosine', 'rel-L2', 'note'))
    for layer in report.layers:
        error = errors.get(layer.name)
        click.echo('%-56s %-5s %9s %8s  %s' % (
            layer.name, layer.dtype, '%.5f' % error.cosine if error else '-',
            '%.4f' % error.rel_l2 if error else '-', layer.reason))
    click.echo('ops (int8 / fp32): ' + ', '.join(
        '%s %d/%d' % (op, counts.get('int8', 0), counts.get('fp32', 0))
        for op, counts in sorted(report.ops.items())))
    click.echo('quantize/dequantize ops: %d' % report.conversions)
    click.echo('coverage: %d of %d convs int8 (%.1f %%); %s calibration on %d images'
               % (report.num_int8_convs, report.num_convs, 100 * report.coverage,
                  report.calib_method, report.num_calib_images))
    for note in report.notes:
        click.echo('note: ' + note)
    if evaluation:
        click.echo('%-8s %8s %8s' % ('', 'FP32', 'INT8'))
        click.echo('%-8s %7.2f%% %7.2f%%' % ('top-1', 100 * evaluation.top1_fp32,
                                             100 * evaluation.top1_int8))
        click.echo('%-8s %7.2f%% %7.2f%%' % ('top-5', 100 * evaluation.top5_fp32,
                                             100 * evaluation.top5_int8))
        click.echo('%-8s %8.2f %8.2f  MB (%.2fx)' % (
            'size', evaluation.size_fp32_bytes / 1e6, evaluation.size_int8_bytes / 1e6,
            evaluation.size_int8_bytes / evaluation.size_fp32_bytes))
        click.echo('same top-1 class on %.2f %% of %d images'
                   % (100 * evaluation.agreement, evaluation.num_images))
        worst = evaluation.worst_layers(3)
        if worst:
            click.echo('largest output error: ' + ', '.join(
                '%s (%.4f)' % (layer.name, layer.rel_l2) for layer in worst))
    click.echo('wrote ' + ', '.join(result.files))
