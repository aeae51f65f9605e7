"""FP32 vs INT8 side by side: top-1/top-5, per-layer output error, model size.

The per-layer error compares each quantized conv's output, as the next layer sees it (dequantized),
with the FP32 model's output of the same layer, over the first ``layer_images`` evaluation images:
cosine similarity and relative L2 error ``|int8 - fp32| / |fp32|``. The layers with the largest
error are the candidates for ``exclude``.
"""
import dataclasses
import os
from typing import Tuple

import mxnet as mx
import numpy as np

from export.mxnet_symbol import INPUT_NAME
from nas.data import make_loader, open_dataset
from nas.errors import QuantizationError
from nas.evaluate import topk_hits
from .mxnet_int8 import conv_groups, prepare_mxnet
from .ort_int8 import model_input

__all__ = ['LayerError', 'EvalReport', 'EvalBatches', 'evaluate_mxnet', 'evaluate_ort']


@dataclasses.dataclass(frozen=True)
class LayerError:
    """Output error of one quantized layer over the evaluated images."""
    name: str
    cosine: float
    rel_l2: float


@dataclasses.dataclass
class EvalReport:
    """Accuracies are fractions of ``num_images``; ``agreement`` is the fraction of images whose
    top-1 class is the same in both models; sizes are bytes of stored weights (MXNet) or files
    (ONNX)."""
    num_images: int
    top1_fp32: float
    top5_fp32: float
    top1_int8: float
    top5_int8: float
    agreement: float
    layers: Tuple[LayerError, ...]
    size_fp32_bytes: int
    size_int8_bytes: int

    def worst_layers(self, count=5):
        return sorted(self.layers, key=lambda layer: -layer.rel_l2)[:count]

    def to_dict(self):
        return dataclasses.asdict(self)


class EvalBatches:
    """Iterable of ``(images, labels)`` numpy batches of the held-out ('val') split of ``data``
    with the evaluation transform; ``num_images`` takes a seeded random subset. The dataset is
    opened (and checked) at construction, images are read while iterating."""

    def __init__(self, data, input_size, batch_size=32, num_images=None, seed=0):
        dataset = open_dataset(data, 'val', input_size, seed)
        if num_images is not None and num_images < len(dataset):
            dataset = dataset.subset(np.sort(np.random.RandomState(seed).permutation(
                len(dataset))[:num_images]))
        self._loader = make_loader(dataset, batch_size, train=False, input_size=input_size)

    def __iter__(self):
        for images, labels in self._loader:
            yield images.asnumpy(), labels.asnumpy().astype(np.int64)


def evaluate_mxnet(net, qnet, batches, input_shape, layer_images=64, ctx=mx.cpu()):
    """Compare ``net`` (FP32, prepared here as in ``quantize_mxnet``) with its quantized
    SymbolBlock ``qnet`` on ``batches``."""
    merged, sym = prepare_mxnet(net, (1,) + tuple(input_shape)[1:], ctx)
    qsym = qnet(mx.sym.var(INPUT_NAME))
    fp32_outs, int8_outs, names = [], [], []
    internals, qinternals = sym.get_internals(), qsym.get_internals()
    for fused, (members, head) in conv_groups(sym.get_backend_symbol('MKLDNN_QUANTIZE')).items():
        quantized = 'quantized_%s_output' % fused
        if quantized not in qinternals.list_outputs():
            continue  # kept FP32
        names.append(members[0])
        fp32_outs.append(internals[head + '_output'])
        int8_outs.append(mx.sym.contrib.dequantize(
            qinternals[quantized], qinternals[quantized + '_min'],
            qinternals[quantized + '_max'], out_type='float32'))
    fp32_layers = _symbol_runner(fp32_outs, merged, ctx)
    int8_layers = _symbol_runner(int8_outs, qnet, ctx)
    merged.hybridize(static_alloc=True)
    qnet.hybridize(static_alloc=True)

    def run(block):
        return lambda x: block(mx.nd.array(x, ctx=ctx)).asnumpy()

    return _compare(run(merged), run(qnet), fp32_layers, int8_layers, names, batches,
                    layer_images, _param_bytes(merged), _param_bytes(qnet))


def evaluate_ort(fp32_path, int8_path, batches, layer_images=64):
    """Compare two ONNX files (FP32 and its quantized version) under onnxruntime on ``batches``."""
    import onnx
    fp32_model, int8_model = onnx.load(str(fp32_path)), onnx.load(str(int8_path))
    fp32_tensors = {name for node in fp32_model.graph.node for name in node.output}
    names, fp32_outs, int8_outs = [], [], []
    for conv, dequantized in _quantized_conv_outputs(int8_model):
        if conv.output[0] in fp32_tensors:  # else the pre-processing changed that layer
            names.append(conv.name)
            fp32_outs.append(conv.output[0])
            int8_outs.append(dequantized)
    return _compare(_ort_runner(fp32_model), _ort_runner(int8_model),
                    _ort_runner(fp32_model, fp32_outs), _ort_runner(int8_model, int8_outs),
                    names, batches, layer_images, os.path.getsize(fp32_path),
                    os.path.getsize(int8_path))


def _compare(fp32_run, int8_run, fp32_layers, int8_layers, names, batches, layer_images,
             size_fp32, size_int8):
    hits = np.zeros((2, 2))  # [model][top-1, top-5]
    agree = count = 0
    sums = np.zeros((len(names), 4))  # dot, |fp32|^2, |int8|^2, |int8 - fp32|^2
    seen = 0
    for images, labels in batches:
        logits = [fp32_run(images), int8_run(images)]
        for i, out in enumerate(logits):
            hits[i] += topk_hits(out, labels)
        agree += int((logits[0].argmax(1) == logits[1].argmax(1)).sum())
        count += len(labels)
        if names and seen < layer_images:
            part = images[:layer_images - seen]
            for row, (ref, quant) in enumerate(zip(fp32_layers(part), int8_layers(part))):
                ref, quant = ref.astype(np.float64).ravel(), quant.astype(np.float64).ravel()
                sums[row] += (ref @ quant, ref @ ref, quant @ quant, np.square(quant - ref).sum())
            seen += len(part)
    if not count:
        raise QuantizationError('the evaluation set is empty; give a dataset with a val split')
    layers = tuple(LayerError(name, float(dot / max(np.sqrt(ref2 * q2), 1e-30)),
                              float(np.sqrt(diff2 / max(ref2, 1e-30))))
                   for name, (dot, ref2, q2, diff2) in zip(names, sums))
    return EvalReport(num_images=count, top1_fp32=hits[0, 0] / count, top5_fp32=hits[0, 1] / count,
                      top1_int8=hits[1, 0] / count, top5_int8=hits[1, 1] / count,
                      agreement=agree / count, layers=layers, size_fp32_bytes=int(size_fp32),
                      size_int8_bytes=int(size_int8))


def _symbol_runner(outputs, block, ctx):
    """``images -> [arrays]`` for extra outputs of ``block``'s graph, sharing its parameters."""
    if not outputs:
        return lambda images: []
    runner = mx.gluon.SymbolBlock(mx.sym.Group(outputs), mx.sym.var(INPUT_NAME),
                                  params=block.collect_params())
    return lambda images: [out.asnumpy() for out in runner(mx.nd.array(images, ctx=ctx))]


def _param_bytes(block):
    return sum(p.data().size * np.dtype(p.dtype).itemsize for p in block.collect_params().values())


def _quantized_conv_outputs(model):
    """``(conv node, name of its dequantized output)`` for each QDQ-quantized conv."""
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    dequantized = {out for node in model.graph.node if node.op_type == 'DequantizeLinear'
                   for out in node.output}

    def only_reader(name, op_type):
        nodes = [n for n in readers.get(name, ()) if n.op_type == op_type]
        return nodes[0] if nodes else None

    for node in model.graph.node:
        if node.op_type != 'Conv' or node.input[1] not in dequantized:  # FP32 conv
            continue
        quantize = only_reader(node.output[0], 'QuantizeLinear')
        dequantize = quantize and only_reader(quantize.output[0], 'DequantizeLinear')
        if dequantize is not None:
            yield node, dequantize.output[0]


def _ort_runner(model, outputs=None):
    """``images -> logits`` (``outputs`` None) or ``images -> [arrays of outputs]``; images are
    cut or padded to the model's batch size when it is fixed."""
    import onnx
    import onnxruntime as ort
    if outputs is not None and not outputs:
        return lambda images: []
    if outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        known = {value.name for value in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs
                                  if name not in known)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    input_name, shape = model_input(model)
    fetch = outputs if outputs else [session.get_outputs()[0].name]

    def run(images):
        size = shape[0] or len(images)
        parts = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk),) + chunk.shape[1:],
                                                     chunk.dtype)]) if len(chunk) < size else chunk
            parts.append([out[:len(chunk)] for out in session.run(fetch, {input_name: padded})])
        results = [np.concatenate(column) for column in zip(*parts)]
        return results if outputs else results[0]
    return run
