"""INT8 static quantization of an exported FP32 ONNX model with onnxruntime (SPEC §7).

onnxruntime's pre-processing (shape inference, graph optimisation) runs first, then
``quantize_static`` calibrates activations on real images and writes QDQ (or QOperator) nodes with
per-channel int8 weights; onnxruntime runs each DequantizeLinear -> op -> QuantizeLinear group as
one int8 kernel.

Formats and defaults are chosen by measurement (``bench/bench_int8.py``, OneShot-S+ at 224, batch
32, 2 threads, AVX-512 VNNI): u8s8 (uint8 activations, int8 weights) QDQ is the fastest; s8s8 is
slower than FP32 and QOperator slower than QDQ. Every conv is quantized by default: keeping the
first conv FP32 was not measurably faster, and keeping the 1024 x 1000 classifier FP32 doubles
the file (0.49x instead of 0.28x of FP32) while per-channel weights keep its logits accurate.

Before and after quantizing, ``ort_rewrites`` rewrites the graph so that hard-swish and the SE
gates run as int8 kernels, with two conversions in all.
"""
import collections
import logging
import os
import tempfile

import numpy as np

from nas.atomic import atomic_paths
from nas.errors import DependencyError, QuantizationError
from .calib import ORT_CALIB_METHODS, ArrayReader, check_choice, read_batches
from .ort_rewrites import fold_constant_scales, fold_gate_offsets, split_hard_swish
from .report import LayerQuant, QuantReport, match_layers, report_json, sidecar_path

__all__ = ['ACTIVATION_TYPES', 'WEIGHT_TYPES', 'QUANT_FORMATS', 'quantize_ort', 'load_onnx',
           'model_input']

log = logging.getLogger(__name__)

ACTIVATION_TYPES = ('uint8', 'int8')
WEIGHT_TYPES = ('int8', 'uint8')
QUANT_FORMATS = ('qdq', 'qoperator')
_CONVERSIONS = ('QuantizeLinear', 'DequantizeLinear')


def _import_quantization():
    try:
        import onnx
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise DependencyError('onnxruntime quantization needs onnx and onnxruntime (%s): pip '
                              'install onnx onnxruntime' % err) from err
    return onnx, quantization, quant_pre_process


def load_onnx(path):
    """The ModelProto at ``path``, with a clear error when it is missing or not ONNX."""
    onnx = _import_quantization()[0]
    if not os.path.isfile(str(path)):
        raise QuantizationError('ONNX model %s does not exist; export one with nas-export --onnx'
                                % path)
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise QuantizationError('%s is not a readable ONNX model: %s' % (path, err)) from err


def model_input(model):
    """``(name, shape)`` of the single image input of an ONNX ModelProto; a symbolic batch is
    None, C/H/W must be fixed."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    if len(inputs) != 1:
        raise QuantizationError('the model has %d inputs (%s); quantization needs one image input'
                                % (len(inputs), ', '.join(v.name for v in inputs)))
    dims = [d.dim_value if d.HasField('dim_value') else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or None in dims[1:]:
        raise QuantizationError('the model input %r has shape %s; export it with a fixed N x C x H '
                                'x W (or symbolic N) image input' % (inputs[0].name, dims))
    return inputs[0].name, tuple(dims)


def quantize_ort(onnx_in, onnx_out, reader, calibrate='minmax', per_channel=True, exclude=(),
                 keep_first_last=False, activation_type='uint8', weight_type='int8',
                 quant_format='qdq', on_batch=None):
    """Quantize the FP32 model ``onnx_in`` into ``onnx_out`` (plus its bit-width sidecar) and
    return a QuantReport. Nothing is written unless everything succeeds.

    ``reader`` gives calibration batches (``calib.CalibrationReader``); batches are re-cut to the
    model's batch size when it is fixed. ``exclude`` holds node-name patterns kept FP32;
    ``keep_first_last`` also keeps the first conv and the classifier FP32.
    """
    onnx, quantization, quant_pre_process = _import_quantization()
    check_choice(calibrate, ORT_CALIB_METHODS, 'onnxruntime calibration method')
    check_choice(activation_type, ACTIVATION_TYPES, 'activation type')
    check_choice(weight_type, WEIGHT_TYPES, 'weight type')
    check_choice(quant_format, QUANT_FORMATS, 'quantization format')
    model = load_onnx(onnx_in)
    input_name, input_shape = model_input(model)
    batches = _rebatch(read_batches(reader, input_shape, input_name), input_shape[0])
    with tempfile.TemporaryDirectory(prefix='nas-quantize-') as folder:
        pre = os.path.join(folder, 'pre.onnx')
        quant_pre_process(str(onnx_in), pre)
        pre_model = _name_nodes(onnx.load(pre))
        onnx.save(fold_gate_offsets(split_hard_swish(pre_model)), pre)
        convs = [node.name for node in pre_model.graph.node if node.op_type == 'Conv']
        reasons = _exclusions(pre_model, convs, exclude, keep_first_last)
        out = os.path.join(folder, 'int8.onnx')
        types = {'uint8': quantization.QuantType.QUInt8, 'int8': quantization.QuantType.QInt8}
        try:
            quantization.quantize_static(
                pre, out, ArrayReader(batches, input_name, on_batch),
                quant_format=(quantization.QuantFormat.QDQ if quant_format == 'qdq'
                              else quantization.QuantFormat.QOperator),
                per_channel=per_channel, activation_type=types[activation_type],
                weight_type=types[weight_type], nodes_to_exclude=sorted(reasons),
                calibrate_method=_calibration_method(quantization, calibrate),
                # one batch at a time: histogram calibrators otherwise hold every activation
                # of every batch in memory at once
                extra_options={'CalibStridedMinMax': 1,
                               'ActivationSymmetric': activation_type == 'int8'})
        except (ValueError, RuntimeError) as err:
            raise QuantizationError('onnxruntime cannot quantize %s: %s' % (onnx_in, err)) from err
        quantized = _compact_names(fold_constant_scales(onnx.load(out)), pre_model)
        data = quantized.SerializeToString()
        report = _report(quantized, convs, reasons, calibrate, activation_type,
                         weight_type, sum(len(b) for b in batches),
                         dict(quant_format=quant_format, per_channel=per_channel,
                              input_shape=list(input_shape)),
                         _runtime_ops(data, folder))
    paths = (str(onnx_out), sidecar_path(onnx_out))
    with atomic_paths(*paths, error=QuantizationError) as (model_temp, sidecar_temp):
        with open(model_temp, 'wb') as handle:
            handle.write(data)
        with open(sidecar_temp, 'w') as handle:
            handle.write(report_json(report, paths[:1]))
    log.info('wrote %s: %d of %d convs int8', onnx_out, report.num_int8_convs, report.num_convs)
    return report


def _calibration_method(quantization, calibrate):
    methods = quantization.CalibrationMethod
    return {'minmax': methods.MinMax, 'entropy': methods.Entropy,
            'percentile': methods.Percentile}[calibrate]


def _rebatch(batches, batch_size):
    """The images re-cut into batches of the model's fixed batch size (as given if symbolic)."""
    if batch_size is None or all(len(b) == batch_size for b in batches):
        return batches
    images = np.concatenate(batches)
    count = len(images) // batch_size * batch_size
    if count == 0:
        raise QuantizationError('the model takes batches of %d images but only %d calibration '
                                'images were given; give at least %d'
                                % (batch_size, len(images), batch_size))
    if count < len(images):
        log.warning('calibrating on %d of %d images (whole batches of %d)', count, len(images),
                     batch_size)
    return [images[i:i + batch_size] for i in range(0, count, batch_size)]


def _name_nodes(model):
    """Name every unnamed node after its first output (unique in a graph): exporters often leave
    names empty, and names are what ``exclude`` patterns and the report use."""
    for node in model.graph.node:
        if not node.name:
            node.name = node.output[0]
    return model


def _compact_names(model, fp32_model):
    """Give the tensors the quantizer created (``<name>_DequantizeLinear_Output``, scales, zero
    points...) short names and drop the names of its Q/DQ nodes; FP32 tensor names stay, so
    layers can still be matched to the FP32 model. Long generated names are ~8 % of the file."""
    keep = {name for node in fp32_model.graph.node for name in node.output}
    keep.update(value.name for value in list(fp32_model.graph.input) + list(model.graph.output))
    keep.update(init.name for init in fp32_model.graph.initializer)
    short = {}

    def rename(name):
        if not name or name in keep:
            return name
        return short.setdefault(name, 'q%d' % len(short))

    for node in model.graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
        if node.op_type in _CONVERSIONS:
            node.name = ''
    for init in model.graph.initializer:
        init.name = rename(init.name)
    del model.graph.value_info[:]  # shapes are re-inferred on load
    return model


def _end_convs(model, convs):
    """The conv that reads the image and the conv that produces the output (the classifier)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    input_name = model_input(model)[0]
    first = next((node.name for node in model.graph.node
                  if node.op_type == 'Conv' and node.input[0] == input_name), convs[0])
    node = producers.get(model.graph.output[0].name)
    while node is not None and node.op_type != 'Conv':
        node = producers.get(node.input[0])
    return first, node.name if node is not None else convs[-1]


def _exclusions(model, convs, patterns, keep_first_last):
    """``{node name: reason}`` of the nodes to keep FP32."""
    reasons = {}
    if keep_first_last and convs:
        first, last = _end_convs(model, convs)
        reasons[first] = 'first conv kept FP32 (keep_first_last)'
        reasons[last] = 'classifier kept FP32 (keep_first_last)'
    matched = match_layers([node.name for node in model.graph.node], patterns, convs)
    for name, pattern in matched.items():
        reasons.setdefault(name, 'excluded by pattern %r' % pattern)
    return reasons


def _report(model, convs, reasons, calibrate, activation_type, weight_type, num_images, settings,
            runtime_ops):
    """A conv is int8 when its input and weight come from DequantizeLinear (QDQ: onnxruntime
    fuses it into QLinearConv) or it became a QLinearConv (QOperator)."""
    producers = {out: node for node in model.graph.node for out in node.output}

    def dequantized(name):
        node = producers.get(name)
        return node is not None and node.op_type == 'DequantizeLinear'

    int8_convs = set()
    for node in model.graph.node:
        if node.op_type == 'QLinearConv':
            int8_convs.add(node.name[:-len('_quant')] if node.name.endswith('_quant')
                           else node.name)
        elif node.op_type == 'Conv' and dequantized(node.input[0]) and dequantized(node.input[1]):
            int8_convs.add(node.name)
    layers = tuple(
        LayerQuant(name, 'int8', 8, 8) if name in int8_convs else
        LayerQuant(name, 'fp32', 32, 32, reasons.get(name, 'onnxruntime left it FP32'))
        for name in convs)
    ops, conversions = runtime_ops
    return QuantReport(backend='onnxruntime', calib_method=calibrate, num_calib_images=num_images,
                       activation_type=activation_type, weight_type=weight_type, layers=layers,
                       ops=ops, conversions=conversions, settings=settings)


def _runtime_ops(data, folder):
    """``(ops, conversions)`` of the graph onnxruntime actually runs (after its QDQ fusions and
    layout changes): ``ops`` is ``{op: {'int8': n, 'fp32': m}}`` with ``QLinear`` prefixes
    dropped; an op is int8 when it is a QLinear op or all its data inputs are integer tensors."""
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = os.path.join(folder, 'runtime.onnx')
    options.log_severity_level = 3  # the layout-specific-model warning is expected here
    ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])
    graph = onnx.load(options.optimized_model_filepath).graph
    constants = {init.name for init in graph.initializer}
    integer, conversions = set(), 0
    ops = collections.defaultdict(collections.Counter)
    for node in graph.node:  # topological order
        inputs = [name for name in node.input if name and name not in constants]
        if node.op_type in _CONVERSIONS:
            conversions += 1
            is_int8 = node.op_type == 'QuantizeLinear'
        else:
            is_int8 = node.op_type.startswith('QLinear') or bool(
                inputs and all(name in integer for name in inputs))
            op = node.op_type[len('QLinear'):] if node.op_type.startswith('QLinear') else \
                node.op_type
            ops[op]['int8' if is_int8 else 'fp32'] += 1
        if is_int8:
            integer.update(node.output)
    return {op: dict(counts) for op, counts in ops.items()}, conversions
