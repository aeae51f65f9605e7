"""Fold inference-mode BatchNorm into the Convolution / FullyConnected that feeds it (SPEC §7).

Works on any HybridBlock: the net is traced to a symbol, the symbol JSON is rewritten and a
SymbolBlock with the folded parameters is returned. The fold reproduces what BatchNorm computes in
inference mode (moving statistics), whatever ``use_global_stats`` says; a BN that cannot be folded
is kept and reported.
"""
import ast
import dataclasses
import json
import logging

import mxnet as mx
import numpy as np

from nas.errors import ExportError
from .mxnet_symbol import INPUT_NAME, symbol_block, trace

__all__ = ['fold_bn', 'MergeReport', 'merge_bn_symbol', 'merge_bn']

log = logging.getLogger(__name__)

# Operator defaults (BatchNorm, FullyConnected), used when the traced JSON omits an attribute.
_DEFAULTS = {'eps': '1e-3', 'fix_gamma': 'True', 'axis': '1', 'flatten': 'True'}


def fold_bn(weight, bias, gamma, beta, mean, var, eps):
    """Return ``(weight, bias)`` of a layer that computes ``BN(layer(x))`` (SPEC §7).

    ``a = gamma / sqrt(var + eps)``, ``W' = a * W`` per output channel (axis 0),
    ``b' = a * (b - mean) + beta``; ``bias=None`` means no bias. Computed in float64, returned in
    the weight's dtype.
    """
    weight = np.asarray(weight)
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    old_bias = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float64)
    new_weight = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_bias = scale * (old_bias - np.asarray(mean, np.float64)) + np.asarray(beta, np.float64)
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)


@dataclasses.dataclass
class MergeReport:
    """What ``merge_bn_symbol`` did: folded BNs (BN -> layer name) and kept BNs (BN -> reason)."""
    folded: dict
    kept: dict
    params_before: int
    params_after: int


def merge_bn_symbol(sym, params):
    """Fold every foldable BatchNorm of ``sym``; return ``(symbol, params, MergeReport)``.

    ``params`` maps names to NDArrays or numpy arrays; the returned dict holds numpy arrays.
    """
    graph = json.loads(sym.tojson())
    nodes = graph['nodes']
    values = {name: _as_numpy(value) for name, value in params.items()}
    uses = _count_uses(nodes, graph['heads'])
    folded, kept, redirect = {}, {}, {}
    for index, node in enumerate(nodes):
        if node['op'] != 'BatchNorm':
            continue
        reason = _why_not_foldable(index, nodes, uses, values)
        if reason:
            kept[node['name']] = reason
            continue
        layer_index = node['inputs'][0][0]
        _fold_into(nodes, layer_index, node, values)
        redirect[index] = layer_index
        folded[node['name']] = nodes[layer_index]['name']
    graph['nodes'], graph['heads'] = _compact(nodes, graph['heads'], redirect)
    graph['arg_nodes'] = [i for i, node in enumerate(graph['nodes']) if node['op'] == 'null']
    graph.pop('node_row_ptr', None)  # recomputed by the loader
    new_sym = mx.sym.load_json(json.dumps(graph))
    new_params = {name: values[name] for name in new_sym.list_inputs() if name != INPUT_NAME}
    report = MergeReport(folded, kept, _count_params(sym, values),
                         _count_params(new_sym, new_params))
    return new_sym, new_params, report


def merge_bn(net, input_shape, ctx=mx.cpu(), strict=False):
    """Return a SymbolBlock equal to ``net`` in inference mode with BatchNorms folded into layers.

    With ``strict=True`` a BatchNorm that cannot be folded raises ExportError instead of being kept.
    """
    sym, params = trace(net, input_shape, ctx)
    new_sym, new_params, report = merge_bn_symbol(sym, params)
    if report.kept:
        detail = '; '.join('%s: %s' % item for item in report.kept.items())
        if strict:
            raise ExportError('%d BatchNorm(s) cannot be folded (%s); rerun with strict=False to '
                              'keep them' % (len(report.kept), detail))
        log.warning('kept %d BatchNorm(s) unfolded: %s', len(report.kept), detail)
    log.info('folded %d BatchNorm(s); params %d -> %d', len(report.folded),
              report.params_before, report.params_after)
    return symbol_block(new_sym, new_params, ctx)


def _as_numpy(value):
    return value.asnumpy() if isinstance(value, mx.nd.NDArray) else np.asarray(value)


def _count_uses(nodes, heads):
    """Number of readers of every (node, output) pair, graph outputs included."""
    uses = {}
    for entry in [inp for node in nodes for inp in node['inputs']] + heads:
        key = (entry[0], entry[1])
        uses[key] = uses.get(key, 0) + 1
    return uses


def _attr(node, key):
    return node.get('attrs', {}).get(key, _DEFAULTS.get(key))


def _is_true(text):
    return text.strip().lower() in ('true', '1')


def _channel_axis(layer):
    """``(axis, ndim)`` of the channels of a Convolution / FullyConnected output (ndim or None)."""
    if layer['op'] == 'FullyConnected':
        return (1, 2) if _is_true(_attr(layer, 'flatten')) else (-1, None)
    layout = _attr(layer, 'layout')
    if layout:
        return layout.index('C'), len(layout)
    return 1, 2 + len(ast.literal_eval(layer['attrs']['kernel']))


def _why_not_foldable(index, nodes, uses, values):
    """Empty string when BN ``index`` can be folded, else the reason it cannot."""
    bn = nodes[index]
    src, out = bn['inputs'][0][:2]
    layer = nodes[src]
    if layer['op'] not in ('Convolution', 'FullyConnected'):
        return 'input comes from %s %r, not a Convolution or FullyConnected' % (
            layer['op'], layer['name'])
    if out != 0 or uses.get((src, 0), 0) != 1:
        return '%r has readers other than this BatchNorm' % layer['name']
    if uses.get((index, 1)) or uses.get((index, 2)):
        return 'its batch mean/variance outputs are read (output_mean_var)'
    axis = int(_attr(bn, 'axis'))
    channel, ndim = _channel_axis(layer)
    if (axis % ndim != channel % ndim) if ndim else axis != channel:
        return 'axis %d is not the channel axis of %r' % (axis, layer['name'])
    for inp in layer['inputs'][1:] + bn['inputs'][1:]:
        source = nodes[inp[0]]
        if source['op'] != 'null' or source['name'] not in values:
            return '%r is computed, not a parameter' % source['name']
        if uses.get((inp[0], 0), 0) != 1:
            return 'parameter %r is shared with another layer' % source['name']
    return ''


def _fold_into(nodes, layer_index, bn, values):
    """Rescale the layer's weight, give it a folded bias (a new null node if it had none)."""
    layer = nodes[layer_index]
    names = [nodes[inp[0]]['name'] for inp in layer['inputs']]
    gamma, beta, mean, var = (values[nodes[inp[0]]['name']] for inp in bn['inputs'][1:])
    if _is_true(_attr(bn, 'fix_gamma')):
        gamma = np.ones_like(gamma)  # the operator ignores the stored gamma
    has_bias = len(names) > 2
    weight, bias = fold_bn(values[names[1]], values[names[2]] if has_bias else None,
                           gamma, beta, mean, var, float(_attr(bn, 'eps')))
    values[names[1]] = weight
    if has_bias:
        values[names[2]] = bias
        return
    bias_name = _unused_name(nodes, values, _bias_name(names[1], layer['name']))
    values[bias_name] = bias
    nodes.append({'op': 'null', 'name': bias_name, 'inputs': [],
                  'attrs': {'__shape__': str(bias.shape)}})
    layer['inputs'].append([len(nodes) - 1, 0, 0])
    layer.setdefault('attrs', {})['no_bias'] = 'False'


def _bias_name(weight_name, layer_name):
    if weight_name.endswith('weight'):
        return weight_name[:-len('weight')] + 'bias'
    return layer_name + '_bias'


def _unused_name(nodes, values, name):
    taken = {node['name'] for node in nodes} | set(values)
    candidate, suffix = name, 0
    while candidate in taken:
        suffix += 1
        candidate = '%s%d' % (name, suffix)
    return candidate


def _compact(nodes, heads, redirect):
    """Drop unreachable nodes, reroute readers of folded BNs to their layer, renumber in
    topological (depth-first) order."""
    def resolve(entry):
        return [redirect[entry[0]], 0, entry[2]] if entry[0] in redirect else entry

    order, seen = [], set()
    for head in heads:
        stack = [(resolve(head)[0], False)]
        while stack:
            index, expanded = stack.pop()
            if expanded:
                order.append(index)
                continue
            if index in seen:
                continue
            seen.add(index)
            stack.append((index, True))
            for inp in reversed(nodes[index]['inputs']):
                stack.append((resolve(inp)[0], False))
    position = {old: new for new, old in enumerate(order)}

    def renumber(entry):
        entry = resolve(entry)
        return [position[entry[0]]] + list(entry[1:])

    new_nodes = [dict(nodes[old], inputs=[renumber(inp) for inp in nodes[old]['inputs']])
                 for old in order]
    return new_nodes, [renumber(head) for head in heads]


def _count_params(sym, values):
    """Learnable parameters: arguments other than the data input (moving statistics excluded)."""
    return int(sum(values[name].size for name in sym.list_arguments() if name != INPUT_NAME))
