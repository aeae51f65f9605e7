"""The MicroNet challenge score (SPEC §6.4) of a network or an ONNX file.

It reads the same traced graph as the FLOPs counter (``nas.counting``), so any network is scored
without model formulas. The Σ normalised score is ``nas.normalized``: the search constrains on it
(SPEC §5) and ``nas`` may not import ``profiling``.
"""
from dataclasses import dataclass, replace
from typing import Tuple, Union

from nas.counting import trace_model
from nas.errors import ProfilingError

__all__ = ['MICRONET_PARAMS', 'MICRONET_OPS', 'CONVENTIONS', 'MicronetLayer', 'MicronetReport',
           'micronet_score', 'with_record_bits']

MICRONET_PARAMS = 6.9e6  # MobileNetV2-1.4 at 32 bit, the MicroNet reference (SPEC §6.4)
MICRONET_OPS = 1170e6

# (mults, adds) per output element of the elementwise ops (SPEC §6.4)
_ELEMENTWISE = {'relu': (1, 0), 'clip': (1, 0), 'hard_sigmoid': (2, 1), 'hard_swish': (3, 1),
                'mul': (1, 0), 'add': (0, 1)}
# Raw counts fall in classes; a bit scenario is one scale factor per class. Adds and 1-bit masks
# (already in 32-bit units) always count 1: accumulation stays 32-bit.
_SCENARIOS = {
    32: dict(weights=1.0, biases=1.0, dot_mults=1.0, mults=1.0),
    16: dict(weights=0.5, biases=0.5, dot_mults=0.5, mults=0.5),
    8: dict(weights=0.25, biases=1.0, dot_mults=0.25, mults=1.0),
}
_SCENARIO_TEXT = {
    32: 'bits 32: every param, mult and add counts 1',
    16: 'bits 16: params x0.5, mults x0.5, adds x1',
    8: 'bits 8: conv/FC weights and conv/FC mults x0.25; biases, adds and all non-conv ops x1',
    'graph': 'bits from the graph: conv/FC weights and biases at their stored width, conv/FC '
             'mults at the wider of weight and input, other mults at their tensor width, '
             'adds x1 (32-bit accumulation)',
}
_CONVENTIONS = (
    'score = params / 6.9M + (mults + adds) / 1170M (MobileNetV2-1.4 at 32 bit)',
    'conv/FC: a dot product of length n = n mults + (n - 1) adds, +1 add with a bias',
    'BN folded into the preceding conv: +C_out params and +1 add per output (nothing more if '
    'the conv has a bias); a BN with no conv before it: 2C params, 1 mult + 1 add per element',
    'global average pool: C mults + (H*W - 1)*C adds; other pooling: (window - 1) adds per '
    'output, +1 mult if average',
    'ReLU, ReLU6/clip: 1 mult per element; hard-sigmoid: 2 mults + 1 add; hard-swish: 3 mults '
    '+ 1 add (x * hard-sigmoid(x) counts the same)',
    'elementwise or SE multiply, scalar scale: 1 mult per element; add, scalar shift: 1 add per '
    'element',
    'split, concat, reshape, dropout, flatten, quantize/dequantize: free',
)
_SHUFFLE_TEXT = {
    False: 'channel shuffle: free',
    True: 'channel shuffle: a 1x1 conv with a 0/1 permutation matrix, sparse: C nonzero weights '
          '+ a C*C 1-bit mask (each entry 1/32 of a param), 1 mult per output element',
}
# 'challenge': the MicroNet rules above. 'reference': how the reference's own MicroNet table
# (1.03 for OneShot-S+ at 32 bit) was counted, to reproduce it and see where it differs.
CONVENTIONS = ('challenge', 'reference')
_REFERENCE_TEXT = (
    "convention 'reference' (the reference's own table, not the challenge rules): the shuffle "
    'counted as above but each mask entry charged 1/16 of a param (1 bit against a 16-bit '
    'base); a BN after a conv charged nothing (no bias param, no add); at 8 bit the additions '
    'x0.25 like the mults'
)


@dataclass(frozen=True, kw_only=True)
class MicronetCounts:
    """MicroNet counts: effective (after bit scaling, in 32-bit units) and raw."""
    params: float
    mults: float
    adds: float
    raw_params: float
    raw_mults: int
    raw_adds: int


@dataclass(frozen=True, kw_only=True)
class MicronetLayer(MicronetCounts):
    """One op's counts."""
    name: str
    op_type: str


@dataclass(frozen=True, kw_only=True)
class MicronetReport(MicronetCounts):
    """MicroNet score; ``bits`` is 32, 16, 8 or 'graph' (widths read from a quantized graph)."""
    score: float
    bits: Union[int, str]
    conventions: str
    layers: Tuple[MicronetLayer, ...]


def _raw_counts(op, producer, consumers, count_shuffle, reference):
    """Raw counts of one op by class (SPEC §6.4 per-layer conventions)."""
    n = op.out_elems
    if op.kind in ('conv', 'fc'):
        bias_adds = n if op.bias_params else 0
        return dict(weights=op.weight_params, biases=op.bias_params, dot_mults=n * op.fan_in,
                    adds=n * (op.fan_in - 1) + bias_adds)
    if op.kind == 'bn':
        if producer is not None and producer.kind in ('conv', 'fc') \
                and consumers[producer.name] == 1:  # folded into the conv before it
            if reference or producer.bias_params:
                return {}
            return dict(biases=op.bias_params, adds=n)
        return dict(biases=op.weight_params + op.bias_params, mults=n, adds=n)
    if op.kind == 'pool':
        return dict(mults=n if op.pool_type == 'avg' else 0, adds=n * (op.window - 1))
    if op.kind in _ELEMENTWISE:
        mults, adds = _ELEMENTWISE[op.kind]
        return dict(mults=mults * n, adds=adds * n)
    if op.kind == 'shuffle' and count_shuffle:
        channels = op.shuffle_channels
        return dict(weights=channels, mask=channels * channels / 32, dot_mults=n)
    if op.kind in ('shuffle', 'free'):
        return {}
    raise ProfilingError('op %s (%s) has no MicroNet counting rule; supported: conv, FC, BN, '
                         'pooling, ReLU, clip, hard-sigmoid, hard-swish, mul, add and data '
                         'movement' % (op.name, op.op_type))


def _graph_scales(op):
    """Scale factors of one op from the bit widths its graph declares."""
    return dict(weights=op.weight_bits / 32, biases=op.bias_bits / 32,
                dot_mults=max(op.weight_bits, op.act_bits) / 32, mults=op.act_bits / 32)


def with_record_bits(ops, record):
    """``ops`` with the bit widths of a quantization record on their convolutions, matched in
    graph order (the record lists every convolution of the float graph in order). Other ops
    keep 32 bit: both runtimes run them in float or requantize around the int8 convolutions."""
    convs = [index for index, op in enumerate(ops) if op.kind == 'conv']
    layers = record['layers']
    if len(layers) != len(convs):
        raise ProfilingError('the quantization record lists %d convolutions but this model has %d; '
                             'score the model it was made from' % (len(layers), len(convs)))
    if any(op.weight_bits != 32 or op.act_bits != 32 for op in ops):
        raise ProfilingError('this graph declares its own bit widths; score it without a record')
    ops = list(ops)
    for index, layer in zip(convs, layers):
        ops[index] = replace(ops[index], weight_bits=layer['weight_bits'],
                             act_bits=layer['act_bits'])
    return ops


def micronet_score(net_or_onnx, input_shape=None, bits=None, count_shuffle=False,
                   quant_record=None, convention='challenge'):
    """MicroNet score (SPEC §6.4) of a HybridBlock or an ONNX model.

    ``bits`` 32, 16 or 8 picks a scenario; None scores a quantized or float16 graph at the widths
    it declares and an unquantized one at 16 bit (the MicroNet "freebie"). ``quant_record`` (a
    ``quantization.report.read_record`` dict, e.g. of an MXNet INT8 export, whose graph holds
    no bit widths) gives the convolutions of the float model the widths they were quantized to.
    ``convention='reference'`` counts as the reference's own table did (``_REFERENCE_TEXT``;
    it implies ``count_shuffle``).
    """
    if convention not in CONVENTIONS:
        raise ProfilingError('convention must be challenge or reference, got %r' % (convention,))
    reference = convention == 'reference'
    count_shuffle = count_shuffle or reference
    ops = trace_model(net_or_onnx, input_shape)
    if quant_record is not None:
        ops = with_record_bits(ops, quant_record)
    declares_bits = any(32 != op.weight_bits or 32 != op.act_bits or 32 != op.bias_bits
                        for op in ops)
    freebie = bits is None and not declares_bits
    if bits is None:
        bits = 'graph' if declares_bits else 16
    elif bits not in _SCENARIOS:
        raise ProfilingError('bits must be 32, 16 or 8, got %r' % (bits,))
    elif declares_bits:
        raise ProfilingError('the model declares its own bit widths (quantized or float16); '
                             'leave bits unset to score it from the graph')
    if reference and bits == 'graph':
        raise ProfilingError("the 'reference' convention scores float models at 32, 16 or 8 bit, "
                             'not a graph with its own bit widths')
    by_name = {op.name: op for op in ops}
    consumers = {}
    for op in ops:
        for name in op.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    layers = []
    for op in ops:
        raw = _raw_counts(op, by_name.get(op.inputs[0]) if op.inputs else None, consumers,
                          count_shuffle, reference)
        if not any(raw.values()):
            continue
        scale = _graph_scales(op) if bits == 'graph' else _SCENARIOS[bits]
        scale = dict(scale, adds=1.0, mask=1.0)
        if reference:  # a mask bit against a 16-bit base; int8 additions at 8 bit
            scale.update(mask=2.0, adds=0.25 if bits == 8 else 1.0)
        get = raw.get
        layers.append(MicronetLayer(
            name=op.name, op_type=op.op_type,
            params=sum(get(k, 0) * scale[k] for k in ('weights', 'biases', 'mask')),
            mults=sum(get(k, 0) * scale[k] for k in ('dot_mults', 'mults')),
            adds=get('adds', 0) * scale['adds'],
            raw_params=get('weights', 0) + get('biases', 0) + get('mask', 0),
            raw_mults=get('dot_mults', 0) + get('mults', 0), raw_adds=get('adds', 0)))
    params = sum(layer.params for layer in layers)
    mults = sum(layer.mults for layer in layers)
    adds = sum(layer.adds for layer in layers)
    scenario = _SCENARIO_TEXT[bits] + (' (unquantized model: the 16-bit freebie)'
                                       if freebie else '')
    conventions = '\n'.join(_CONVENTIONS + (_SHUFFLE_TEXT[bool(count_shuffle)], scenario)
                            + ((_REFERENCE_TEXT,) if reference else ()))
    return MicronetReport(
        score=params / MICRONET_PARAMS + (mults + adds) / MICRONET_OPS,
        params=params, mults=mults, adds=adds,
        raw_params=sum(layer.raw_params for layer in layers),
        raw_mults=sum(layer.raw_mults for layer in layers),
        raw_adds=sum(layer.raw_adds for layer in layers),
        bits=bits, conventions=conventions, layers=tuple(layers))
