"""What a quantizer did, per layer, in one format for both runtimes, and the bit-width sidecar.

The sidecar (``<output>.quant.json``) records the bit width of every layer so that scoring tools
(``nas-score micronet``, SPEC §6.4) and people can see what runs at 8 bits without re-deriving it
from a runtime-specific graph.
"""
import dataclasses
import fnmatch
import json
import os
from typing import Tuple

from nas.atomic import read_json
from nas.errors import QuantizationError

__all__ = ['LayerQuant', 'QuantReport', 'match_layers', 'sidecar_path', 'report_json',
           'read_record']

RECORD_FORMAT = 'oneshot-nas quantization record, version 1'
ACCUMULATOR_BITS = 32  # int8 x int8 products are summed in int32 by both runtimes


@dataclasses.dataclass(frozen=True)
class LayerQuant:
    """One convolution: its precision and, when it stays FP32, why."""
    name: str
    dtype: str  # 'int8' or 'fp32'
    weight_bits: int
    act_bits: int
    reason: str = ''


@dataclasses.dataclass
class QuantReport:
    """The result of ``quantize_mxnet`` / ``quantize_ort``.

    ``layers`` lists every convolution of the FP32 graph in order; ``ops`` counts every other op
    type as ``{op: {'int8': n, 'fp32': m}}``; ``conversions`` counts quantize / dequantize /
    requantize ops the runtime inserts between int8 and FP32 regions.
    """
    backend: str
    calib_method: str
    num_calib_images: int
    activation_type: str
    weight_type: str
    layers: Tuple[LayerQuant, ...]
    ops: dict
    conversions: int
    settings: dict = dataclasses.field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def num_convs(self):
        return len(self.layers)

    @property
    def num_int8_convs(self):
        return sum(layer.dtype == 'int8' for layer in self.layers)

    @property
    def coverage(self):
        """Quantized convolutions / all convolutions."""
        return self.num_int8_convs / self.num_convs if self.layers else 0.0

    def fp32_layers(self):
        return {layer.name: layer.reason for layer in self.layers if layer.dtype != 'int8'}

    def to_dict(self):
        data = dataclasses.asdict(self)
        data.update(num_convs=self.num_convs, num_int8_convs=self.num_int8_convs,
                    coverage=self.coverage)
        return data


def match_layers(names, patterns, examples=()):
    """Names matched by any of ``patterns`` (shell wildcards matched anywhere in a name), as
    ``{name: pattern}``; a pattern that matches nothing raises QuantizationError, quoting a few
    ``examples`` (default: names) of valid names."""
    names = list(names)
    matched = {}
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, '*%s*' % pattern)]
        if not hits:
            examples = list(examples or names)
            examples = ', '.join(examples[:2] + examples[-1:])
            raise QuantizationError('--exclude pattern %r matches no layer; layer names look like '
                                    '%s (see the per-layer report)' % (pattern, examples))
        for name in hits:
            matched.setdefault(name, pattern)
    return matched


def sidecar_path(output):
    """``model.onnx`` -> ``model.quant.json``; an MXNet prefix ``p`` -> ``p.quant.json``."""
    root, ext = os.path.splitext(str(output))
    return (root if ext == '.onnx' else str(output)) + '.quant.json'


def report_json(report, files):
    """The sidecar text: bit widths per layer, coverage, calibration settings, written files."""
    data = {
        'format': RECORD_FORMAT,
        'backend': report.backend,
        'files': [os.path.basename(str(f)) for f in files],
        'bits': {'weights': 8, 'activations': 8, 'accumulator': ACCUMULATOR_BITS,
                 'fp32_layers': 32},
    }
    data.update(report.to_dict())
    return json.dumps(data, indent=2, sort_keys=False)


def read_record(path):
    """The sidecar written by ``report_json``, checked: its format and one layer per conv."""
    data = read_json(path, QuantizationError, 'quantization record')
    if not isinstance(data, dict) or data.get('format') != RECORD_FORMAT:
        raise QuantizationError('%s is not a quantization record (format %r expected); nas-quantize '
                                'writes one beside its output as *.quant.json'
                                % (path, RECORD_FORMAT))
    layers = data.get('layers')
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and isinstance(layer.get('weight_bits'), int)
            and isinstance(layer.get('act_bits'), int) for layer in layers):
        raise QuantizationError('quantization record %s has no valid per-layer bit widths' % path)
    return data
