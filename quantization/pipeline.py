"""``quantize_model``: model name / architecture / ONNX file in, INT8 model (+ evaluation) out.

This is what ``nas-quantize`` runs: resolve the model, read calibration images, quantize with
the chosen runtime, write the result atomically, and optionally evaluate FP32 vs INT8.
"""
import dataclasses
import os
import tempfile
from typing import Optional, Tuple

import mxnet as mx

from export.merge_bn import merge_bn
from export.onnx import ONNX_CHANNEL_BLOCK, export_onnx
from nas.errors import QuantizationError
from zoo import load_model
from .calib import check_choice, open_reader
from .evaluate import EvalBatches, EvalReport, evaluate_mxnet, evaluate_ort
from .mxnet_int8 import quantize_mxnet, save_mxnet_int8
from .ort_int8 import load_onnx, model_input, quantize_ort
from .report import QuantReport, sidecar_path

__all__ = ['BACKENDS', 'QuantizeResult', 'quantize_model']

BACKENDS = ('mxnet', 'onnxruntime')


@dataclasses.dataclass
class QuantizeResult:
    report: QuantReport
    evaluation: Optional[EvalReport]
    files: Tuple[str, ...]

    def to_dict(self):
        return {'quantization': self.report.to_dict(), 'files': list(self.files),
                'evaluation': self.evaluation.to_dict() if self.evaluation else None}


def quantize_model(model, backend, calib_data, output, weights=None, input_size=None,
                   num_calib=320, calib_method=None, exclude=(), keep_first_last=None,
                   eval_data=None, eval_images=None, batch_size=1, opset=13, root=None,
                   on_batch=None, **backend_options):
    """Quantize ``model`` (zoo name, architecture JSON, gluoncv name; or an FP32 ``.onnx`` file
    for onnxruntime) and write it to ``output`` (an MXNet prefix or an ``.onnx`` path).

    ``weights`` is as for ``zoo.load_model`` (by default the store's weights of a zoo model,
    else random ones with a warning). ``calib_method`` defaults to 'naive' (mxnet) / 'minmax'
    (onnxruntime); ``keep_first_last`` (keep the first conv and the classifier FP32) to True
    (mxnet) / False (onnxruntime), for the reasons in the backend modules. ``batch_size`` is the
    batch dimension of an exported ONNX model. ``backend_options`` go to ``quantize_mxnet``
    (quantized_dtype) or ``quantize_ort`` (per_channel, activation_type, weight_type,
    quant_format).
    """
    check_choice(backend, BACKENDS, 'backend')
    if str(model).lower().endswith('.onnx') and backend != 'onnxruntime':
        raise QuantizationError('%s is an ONNX file; quantize it with --backend onnxruntime, or '
                                'give the architecture for --backend mxnet' % model)
    net, size = _load_net(model, weights, input_size, root)
    size = input_size or size
    # open both datasets before any work, so that a bad path fails before anything is written
    reader = open_reader(calib_data, size, num_calib)
    evaluation_set = EvalBatches(eval_data, size, num_images=eval_images) if eval_data else None
    input_shape = (1, 3, size, size)
    if backend == 'mxnet':
        qnet, report = quantize_mxnet(
            net, reader, input_shape, calib_mode=calib_method or 'naive', exclude=exclude,
            keep_first_last=True if keep_first_last is None else keep_first_last,
            on_batch=on_batch, **backend_options)
        evaluation = evaluate_mxnet(net, qnet, evaluation_set, input_shape) \
            if evaluation_set else None
        files = save_mxnet_int8(qnet, output, report)
        return QuantizeResult(report, evaluation, files)
    with tempfile.TemporaryDirectory(prefix='nas-quantize-') as folder:
        fp32 = str(model) if net is None else os.path.join(folder, 'fp32.onnx')
        if net is not None:
            export_onnx(merge_bn(net, input_shape), fp32, (batch_size, 3, size, size), opset=opset,
                        channel_block=ONNX_CHANNEL_BLOCK)  # as nas-export writes it
        report = quantize_ort(fp32, output, reader, calibrate=calib_method or 'minmax',
                              exclude=exclude, keep_first_last=bool(keep_first_last),
                              on_batch=on_batch, **backend_options)
        evaluation = evaluate_ort(fp32, output, evaluation_set) if evaluation_set else None
    return QuantizeResult(report, evaluation, (str(output), sidecar_path(output)))


def _onnx_input_size(path):
    _, shape = model_input(load_onnx(path))
    if shape[2] != shape[3]:
        raise QuantizationError('the model input %s is not square; quantize_model expects '
                                'N x C x S x S images' % (shape,))
    return shape[2]


def _load_net(model, weights, input_size, root):
    """The FP32 network of ``model`` with its weights (``zoo.load_model``; None for an ONNX
    file, which carries its own) and its input size."""
    loaded = load_model(model, weights, root=root, input_size=input_size, onnx=True)
    if loaded.onnx:
        return None, _onnx_input_size(loaded.onnx)
    size = loaded.input_size
    loaded.net(mx.nd.zeros((1, 3, size, size)))  # finish deferred initialisation
    return loaded.net, size
