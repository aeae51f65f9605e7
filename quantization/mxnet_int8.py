"""INT8 post-training quantization with MXNet's MKL-DNN backend (SPEC §7).

The network's MXNet deployment graph (``export.deploy``: BN merged, the channel shuffle absorbed
into the convolution weights) is quantized: ``mxnet.contrib.quantization.quantize_net_v2`` fuses
conv(+bias)(+relu)(+add) into ``_sg_mkldnn_conv`` nodes, quantizes them and calibrates the
thresholds on real images. By default the first conv and the classifier stay FP32:

* the first conv reads the normalised image, which is signed (uint8 cannot hold it) and has only
  3 input channels (27 MACs per output): int8 gains almost no speed there, and its input rounding
  error propagates through the whole network;
* the classifier's outputs are the logits that decide top-1; it is one 1x1 conv at 1x1
  resolution, so keeping it FP32 costs nothing measurable.

The hard-swish multiplies ``x * hard_sigmoid(x)`` stay FP32 too (``fp32_hard_swish``): MXNet
1.9.1's int8 ``elemwise_mul`` adds an error that grows through the network (per-layer relative
error 0.45 by stage 4 against 0.06 without it; digits top-1 96.7 % FP32 -> 92.8 % with it,
96.9 % without, naive calibration).

Every other conv is quantized (the seed model quantized only 26 of 98, SPEC P6); ``report``
lists each conv's precision. MXNet 1.9.1 quantizes weights when the graph first runs, so the
saved ``.params`` keep FP32 weights: the INT8 file is not smaller than the FP32 one.
"""
import collections
import json
import logging

import mxnet as mx
import numpy as np
from mxnet.contrib.quantization import quantize_net_v2

from export.deploy import deployment_graph
from export.mxnet_symbol import INPUT_NAME, symbol_block
from nas.atomic import atomic_paths
from nas.errors import QuantizationError, error_reason
from .calib import MXNET_CALIB_MODES, ProgressIter, check_choice, read_batches
from .report import LayerQuant, QuantReport, match_layers, report_json, sidecar_path

__all__ = ['QUANTIZED_DTYPES', 'quantize_mxnet', 'prepare_mxnet', 'save_mxnet_int8',
           'load_mxnet_int8', 'conv_groups']

log = logging.getLogger(__name__)

QUANTIZED_DTYPES = ('int8', 'uint8', 'auto')
_FUSED_CONV = '_sg_mkldnn_conv'
_CONVERSIONS = ('_contrib_quantize_v2', '_contrib_quantize', '_contrib_dequantize',
                '_contrib_requantize')
_QUANTIZED_PREFIX = '_contrib_quantized_'
_HARD_SWISH_FP32 = 'hard-swish multiply kept FP32 (int8 elemwise_mul is inaccurate in MXNet 1.9.1)'
_NO_INT8_KERNEL = "MXNet 1.9.1's oneDNN backend has no INT8 kernel for it"
_FP32_WHY = {'elemwise_mul': 'the hard-swish multiplies (int8 elemwise_mul is inaccurate in MXNet '
                             '1.9.1)',
             'hard_sigmoid': _NO_INT8_KERNEL + ' (hard-swish and SE gates)',
             'slice_axis': _NO_INT8_KERNEL + ' (the channel split of each ShuffleNet unit)',
             'broadcast_mul': _NO_INT8_KERNEL + ' (the SE scale)'}


def quantize_mxnet(net, reader, input_shape, calib_mode='naive', exclude=(),
                   keep_first_last=True, fp32_hard_swish=True, quantized_dtype='int8',
                   on_batch=None, ctx=mx.cpu()):
    """Quantize ``net`` (any HybridBlock) to INT8 with MKL-DNN; return ``(qnet, QuantReport)``.

    ``reader`` gives calibration batches (``calib.CalibrationReader``) of ``input_shape``
    (N, C, H, W; N free). ``exclude`` holds layer-name patterns kept FP32 (``report.match_layers``);
    ``keep_first_last`` also keeps the first conv and the classifier FP32, ``fp32_hard_swish``
    the hard-swish multiplies (module doc).
    ``on_batch(n)`` is called per calibration batch (a progress bar).
    """
    check_choice(calib_mode, MXNET_CALIB_MODES, 'MXNet calibration mode')
    check_choice(quantized_dtype, QUANTIZED_DTYPES, 'quantized dtype')
    batches = read_batches(reader, input_shape, INPUT_NAME)
    image_shape = (1,) + tuple(input_shape)[1:]
    merged, sym = prepare_mxnet(net, image_shape, ctx)
    groups = conv_groups(sym.get_backend_symbol('MKLDNN_QUANTIZE'))
    convs = [name for name, op in _ops(sym) if op == 'Convolution']
    reasons = _exclusions(sym, convs, exclude, keep_first_last, fp32_hard_swish)
    owner = {op: fused for fused, (members, _) in groups.items() for op in members}
    exclude_names = sorted({owner.get(name, name) for name in reasons})
    num_images = sum(len(batch) for batch in batches)
    log.info('quantizing to %s with %s calibration on %d images; FP32: %s', quantized_dtype,
              calib_mode, num_images, ', '.join(exclude_names) or 'nothing')
    try:
        qnet = quantize_net_v2(merged, quantized_dtype=quantized_dtype,
                               exclude_layers=exclude_names, calib_mode=calib_mode,
                               calib_data=ProgressIter(batches, on_batch), ctx=ctx, logger=log)
    except mx.base.MXNetError as err:
        raise QuantizationError('MXNet cannot quantize this network: %s'
                                % error_reason(err)) from err
    qnet = _relu_ranges(qnet)
    _smoke_test(qnet, batches[0], quantized_dtype, ctx)
    notes = ('weights are stored FP32 and quantized by MKL-DNN when the graph first runs',) + (
        (_HARD_SWISH_FP32,) if fp32_hard_swish else ())
    report = _report(qnet, convs, groups, reasons, calib_mode, quantized_dtype, num_images,
                     notes)
    return qnet, report


def conv_groups(fused_sym):
    """``{fused node name: (names of the ops inside, name of the op whose output it is)}`` for
    every ``_sg_mkldnn_conv`` (conv + bias/relu/add) of an MKLDNN_QUANTIZE-partitioned symbol."""
    groups = {}
    for node in json.loads(fused_sym.tojson())['nodes']:
        if node['op'] != _FUSED_CONV:
            continue
        inner = node['subgraphs'][0]
        members = [n['name'] for n in inner['nodes'] if n['op'] != 'null']
        head = inner['nodes'][inner['heads'][0][0]]['name']
        groups[node['name']] = (members, head)
    return groups


def prepare_mxnet(net, input_shape, ctx=mx.cpu()):
    """``(block, symbol)``: the FP32 network as it is quantized, the MXNet deployment graph
    before oneDNN's FP32 partitioning (BN merged, shuffle as slices, relus in the fusable
    ``Activation`` form; ``export.deploy``), so the INT8 graph is as lean as the FP32 one."""
    sym, params, _ = deployment_graph(net, input_shape, ctx, fuse=False)
    return symbol_block(sym, params, ctx), sym


def _ops(sym):
    """(name, op) of every operator node, in graph order."""
    return [(node['name'], node['op']) for node in json.loads(sym.tojson())['nodes']
            if node['op'] != 'null']


def _exclusions(sym, convs, patterns, keep_first_last, fp32_hard_swish):
    """``{op name: reason}`` of the layers to keep FP32."""
    reasons = {}
    if keep_first_last and convs:
        reasons[convs[0]] = 'first conv kept FP32 (signed image input, 3 input channels)'
        reasons[convs[-1]] = 'classifier kept FP32 (its outputs are the logits)'
    if fp32_hard_swish:
        reasons.update((name, _HARD_SWISH_FP32) for name in _hard_swish_muls(sym))
    matched = match_layers([name for name, _ in _ops(sym)], patterns, convs)
    for name, pattern in matched.items():
        reasons.setdefault(name, 'excluded by pattern %r' % pattern)
    return reasons


def _hard_swish_muls(sym):
    """Names of the ``elemwise_mul(x, hard_sigmoid(x))`` nodes."""
    nodes = json.loads(sym.tojson())['nodes']
    names = []
    for node in nodes:
        if node['op'] != 'elemwise_mul':
            continue
        first, second = (nodes[i] for i, _, _ in node['inputs'])
        for data, gate in ((first, second), (second, first)):
            if gate['op'] == 'hard_sigmoid' and nodes[gate['inputs'][0][0]] is data:
                names.append(node['name'])
                break
    return names


def _relu_ranges(qnet):
    """Entropy calibration gives every output a symmetric range [-t, t]. A conv with a fused ReLU
    outputs uint8, and MXNet 1.9.1 then rejects the negative minimum at run time ("Expect int8
    when data_min < 0"); a ReLU's output is >= 0, so its range is [0, t]."""
    graph = json.loads(qnet(mx.sym.var(INPUT_NAME)).tojson())
    changed = False
    for node in graph['nodes']:
        attrs = node.get('attrs', {})
        if (node['op'] == _FUSED_CONV and attrs.get('with_act') == 'true'
                and float(attrs.get('min_calib_range', 0)) < 0 and _fused_act(node) == 'relu'):
            attrs['min_calib_range'] = '0'
            changed = True
    if not changed:
        return qnet
    return mx.gluon.SymbolBlock(mx.sym.load_json(json.dumps(graph)), mx.sym.var(INPUT_NAME),
                                params=qnet.collect_params())


def _fused_act(node):
    acts = [n.get('attrs', {}).get('act_type') for n in node['subgraphs'][0]['nodes']
            if n['op'] == 'Activation']
    return acts[0] if acts else None


def _smoke_test(qnet, batch, quantized_dtype, ctx):
    """Run one batch: MXNet 1.9.1 builds the int8 kernels lazily, so unsupported combinations
    (e.g. uint8 data into a conv whose input is signed) only fail here."""
    try:
        out = qnet(mx.nd.array(batch[:1], ctx=ctx)).asnumpy()
    except mx.base.MXNetError as err:
        raise QuantizationError(
            "MXNet 1.9.1 cannot run this network quantized to %s: %s; use quantized_dtype 'int8'"
            % (quantized_dtype, error_reason(err))) from err
    if not np.isfinite(out).all():
        raise QuantizationError('the %s network produces NaN or infinite outputs; check the '
                                'calibration data' % quantized_dtype)


def _report(qnet, convs, groups, reasons, calib_mode, quantized_dtype, num_images, notes):
    qsym = qnet(mx.sym.var(INPUT_NAME))
    int8_convs, ops, conversions = set(), collections.defaultdict(collections.Counter), 0
    for name, op in _ops(qsym):
        if op == _FUSED_CONV:
            fused = name[len('quantized_'):] if name.startswith('quantized_') else name
            members = groups[fused][0]
            if name.startswith('quantized_'):
                int8_convs.update(members)
        elif op in _CONVERSIONS:
            conversions += 1
        elif op.startswith(_QUANTIZED_PREFIX):
            ops[op[len(_QUANTIZED_PREFIX):]]['int8'] += 1
        else:
            ops[op]['fp32'] += 1
    layers = []
    for conv in convs:
        if conv in int8_convs:
            layers.append(LayerQuant(conv, 'int8', 8, 8))
        else:
            layers.append(LayerQuant(conv, 'fp32', 32, 32,
                                     reasons.get(conv, 'MXNet left it FP32')))
    return QuantReport(backend='mxnet', calib_method=calib_mode, num_calib_images=num_images,
                       activation_type=quantized_dtype, weight_type='int8', layers=tuple(layers),
                       ops={op: dict(counts) for op, counts in ops.items()},
                       conversions=conversions, settings={'quantized_dtype': quantized_dtype},
                       notes=notes + _fp32_op_notes(ops))


def _fp32_op_notes(ops):
    """Why each non-conv operator type still runs FP32 (each costs a dequantize / quantize)."""
    return tuple('%d %s FP32: %s' % (counts['fp32'], op, _FP32_WHY.get(op, _NO_INT8_KERNEL))
                 for op, counts in sorted(ops.items()) if counts.get('fp32'))


def save_mxnet_int8(qnet, prefix, report):
    """Write ``prefix-symbol.json``, ``prefix-0000.params`` and the bit-width sidecar, all or none.

    Returns the three paths; ``load_mxnet_int8(prefix)`` reads the network back.
    """
    qsym = qnet(mx.sym.var(INPUT_NAME))
    aux = set(qsym.list_auxiliary_states())
    tagged = {('aux:' if name in aux else 'arg:') + name: param.data().as_in_context(mx.cpu())
              for name, param in qnet.collect_params().items()}
    paths = ('%s-symbol.json' % prefix, '%s-0000.params' % prefix, sidecar_path(prefix))
    with atomic_paths(*paths, error=QuantizationError) as (sym_temp, params_temp, sidecar_temp):
        qsym.save(sym_temp)
        mx.nd.save(params_temp, tagged)
        with open(sidecar_temp, 'w') as handle:
            handle.write(report_json(report, paths[:2]))
    log.info('wrote %s', ', '.join(paths))
    return paths


def load_mxnet_int8(prefix, ctx=mx.cpu()):
    """The SymbolBlock saved by ``save_mxnet_int8``."""
    return mx.gluon.SymbolBlock.imports('%s-symbol.json' % prefix, [INPUT_NAME],
                                        '%s-0000.params' % prefix, ctx=ctx)
