"""Σ normalised score (SPEC §6.3) and MicroNet score (SPEC §6.4)."""
import numpy as np
import pytest
from mxnet.gluon import HybridBlock, nn

from nas.counting import count_net
from nas.errors import ProfilingError, UnknownModelError
from nas.normalized import combined_score, normalized_score
from profiling.scores import MICRONET_OPS, MICRONET_PARAMS, micronet_score
from test_counting import TINY_SHAPE, TinyNet


# -- Σ normalised score -----------------------------------------------------------------------

@pytest.mark.parametrize('flops, params, ref, sigma, places', [
    # seed table: rounded figures, Σ as printed there (P7)
    (291e6, 3.5e6, 'SinglePathOneShot', 1.9166, 4),    # OneShot-S+
    (297e6, 3.7e6, 'SinglePathOneShot', 1.9937, 4),    # OneShot+
    (217e6, 5.4e6, 'SinglePathOneShot', 2.25, 2),      # MobileNetV3-Large
    (585e6, 6.9e6, 'SinglePathOneShot', 3.81, 2),      # MobileNetV2-1.4
    # exact SPEC §8 counts [verified]
    (291475944, 3541829, 'SinglePathOneShot', 1.9304, 4),
    (297058024, 3742955, 'SinglePathOneShot', 2.0065, 4),
    (327909096, 3433579, 'SinglePathOneShot', 2.0096, 4),
])
def test_normalized_score_reproduces_the_tables(flops, params, ref, sigma, places):
    assert round(normalized_score(flops, params, ref), places) == sigma


# OneShot-S+ (SPEC §8: 291,475,944 FLOPs, 3,541,829 params) against each comparison model's
# published FLOPs / params (SPEC §5), worked by hand: combined = (F/F_ref + P/P_ref) / 2
@pytest.mark.parametrize('ref, combined', [
    ('SinglePathOneShot', (0.888646 + 1.041714) / 2),     # 291.48/328, 3.5418/3.4
    ('MobileNetV3_large', (1.343207 + 0.655894) / 2),     # 291.48/217, 3.5418/5.4: 0.99955
    ('MobileNetV2_1.4', (0.498249 + 0.513309) / 2),       # 291.48/585, 3.5418/6.9
    ('ShuffleNetV2+_medium', (1.312955 + 0.632469) / 2),  # 291.48/222, 3.5418/5.6
])
def test_combined_against_each_comparison_model(ref, combined):
    assert combined_score(291475944, 3541829, ref) == pytest.approx(combined, abs=1e-6)
    assert normalized_score(291475944, 3541829, ref) == pytest.approx(2 * combined, abs=2e-6)


def test_unknown_reference_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match='MobileNetV3_large'):
        normalized_score(1e6, 1e6, ref='MobileNetV4')


# -- MicroNet score: hand counts --------------------------------------------------------------

class MicroTiny(HybridBlock):
    """conv 3->4 (3x3, no bias) + BN + ReLU, hard-swish, GAP, Dense 4->2 with bias; 3x4x4 in."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(4, 3, padding=1, use_bias=False, in_channels=3)
            self.bn = nn.BatchNorm(in_channels=4)
            self.fc = nn.Dense(2, in_units=4)

    def hybrid_forward(self, F, x):
        x = F.relu(self.bn(self.conv(x)))
        x = x * F.hard_sigmoid(x, alpha=1.0 / 6, beta=0.5)
        return self.fc(F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type='avg'))


# 64 conv outputs with dot products of n = 27, 2 Dense outputs with n = 4
WEIGHTS, BIASES = 4 * 27 + 2 * 4, 4 + 2             # BN folds into a 4-channel bias
DOT_MULTS = 64 * 27 + 2 * 4
OTHER_MULTS = 64 + 2 * 64 + 64 + 4                  # ReLU, hard-sigmoid, x * hs, GAP divide
ADDS = 64 * 26 + 64 + 64 + 15 * 4 + (2 * 3 + 2)     # conv, folded BN, hard-sigmoid, GAP, Dense


@pytest.mark.parametrize('bits, params, mults', [
    (32, WEIGHTS + BIASES, DOT_MULTS + OTHER_MULTS),
    (16, (WEIGHTS + BIASES) / 2, (DOT_MULTS + OTHER_MULTS) / 2),
    (8, WEIGHTS / 4 + BIASES, DOT_MULTS / 4 + OTHER_MULTS),
])
def test_micronet_matches_hand_count(bits, params, mults):
    report = micronet_score(MicroTiny(), (3, 4, 4), bits=bits)
    assert (report.params, report.mults, report.adds) == (params, mults, ADDS)
    assert (report.raw_params, report.raw_mults, report.raw_adds) == \
        (WEIGHTS + BIASES, DOT_MULTS + OTHER_MULTS, ADDS)
    assert report.score == pytest.approx(params / 6.9e6 + (mults + ADDS) / 1170e6, rel=1e-12)
    assert report.bits == bits and 'bits %d' % bits in report.conventions


def test_bit_scenarios_are_ordered_and_default_is_the_freebie():
    net = MicroTiny()
    scores = [micronet_score(net, (3, 4, 4), bits=b).score for b in (32, 16, 8)]
    assert scores[0] > scores[1] > scores[2]
    default = micronet_score(net, (3, 4, 4))
    assert default.bits == 16 and default.score == scores[1]
    assert 'freebie' in default.conventions


def test_count_shuffle_adds_a_sparse_permutation_conv():
    """TinyNet shuffles C = 8 channels of 8x8: 8 nonzero weights + 64 mask bits, 512 mults."""
    plain = micronet_score(TinyNet(), TINY_SHAPE, bits=32)
    counted = micronet_score(TinyNet(), TINY_SHAPE, bits=32, count_shuffle=True)
    assert counted.params - plain.params == 8 + 64 / 32
    assert (counted.mults - plain.mults, counted.adds - plain.adds) == (512, 0)
    plain8 = micronet_score(TinyNet(), TINY_SHAPE, bits=8)
    counted8 = micronet_score(TinyNet(), TINY_SHAPE, bits=8, count_shuffle=True)
    assert counted8.params - plain8.params == 8 / 4 + 64 / 32  # the 1-bit mask never scales
    assert counted8.mults - plain8.mults == 512 / 4
    assert 'sparse' in counted.conventions and 'shuffle: free' in plain.conventions


@pytest.mark.slow
def test_reference_convention_reproduces_its_published_table():
    """The reference's MicroNet table for OneShot-S+ (its README, 32 bit): 3.652M params,
    299.621M mults, 288.323M adds, score 1.03. Its rules differ from the challenge's in two ways
    visible at 32 bit, each accounted for exactly below: a shuffle-mask bit is 1/16 of a param
    (ours 1/32) and a BN after a conv is free (ours: a bias and an add per output)."""
    import zoo
    from nas.trace_mxnet import trace_net
    net = zoo.get_model('oneshot_s_plus')  # counting only: the weights do not matter
    reference = micronet_score(net, (3, 224, 224), bits=32, convention='reference')
    assert round(reference.params / 1e6, 3) == 3.652
    assert round(reference.adds / 1e6, 3) == 288.323
    assert reference.mults / 1e6 == pytest.approx(299.621, rel=2e-3)  # ours 299.934M
    assert round(reference.score, 2) == 1.03
    ours = micronet_score(net, (3, 224, 224), bits=32, count_shuffle=True)
    masks = sum(op.shuffle_channels ** 2 for op in trace_net(net, (3, 224, 224))
                if op.kind == 'shuffle')
    folded = [layer for layer in ours.layers if layer.op_type == 'BatchNorm']
    assert reference.params == ours.params + masks / 32 - sum(b.params for b in folded)
    assert reference.adds == ours.adds - sum(b.adds for b in folded)
    assert reference.mults == ours.mults
    assert round(ours.score, 4) == 1.0286  # the challenge rules land near 1.03 by chance
    at8 = micronet_score(net, (3, 224, 224), bits=8, convention='reference')
    assert at8.adds == reference.adds / 4  # int8 additions counted at 8 bit
    assert 'each mask entry charged 1/16' in reference.conventions


def test_bad_bits_and_unknown_ops_are_refused():
    with pytest.raises(ProfilingError, match='bits must be 32, 16 or 8'):
        micronet_score(MicroTiny(), (3, 4, 4), bits=4)
    with pytest.raises(ProfilingError, match='convention must be challenge or reference'):
        micronet_score(MicroTiny(), (3, 4, 4), convention='paper')
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 1, in_channels=3), nn.Activation('sigmoid'))
    with pytest.raises(ProfilingError, match='no MicroNet counting rule'):
        micronet_score(net, (3, 4, 4))


def test_mobilenet_v2_1_4_against_the_micronet_reference():
    """MicroNet's reference is MobileNetV2-1.4 = 6.9M params + 1170M ops = score 2.0.

    Ops agree (within 5 %: gluoncv's variant truncates widths, int(c * 1.4), and has no classifier
    bias, so it is 3 % lighter than the paper's). Params do not: the 6.9M comes from the paper's
    table, but the network has about 6.06M (TF-slim's checkpoint lists 6.06M; a paper-exact build
    with widths rounded to multiples of 8 counts 6.08M here), so the score is about 1.85, not 2.0.
    """
    from gluoncv.model_zoo.mobilenet import get_mobilenet_v2
    net = get_mobilenet_v2(1.4)
    report = micronet_score(net, (3, 224, 224), bits=32)
    assert report.mults + report.adds == pytest.approx(MICRONET_OPS, rel=0.05)
    # two paths agree: SPEC §6.1 params less BN gamma (each BN becomes its conv's bias)
    counted = count_net(net, (3, 224, 224))
    gammas = sum(r.params for r in counted.layers if r.op_type == 'BatchNorm') // 2
    assert report.params == counted.params - gammas
    assert report.params / MICRONET_PARAMS == pytest.approx(0.878, abs=0.005)
    assert report.score == pytest.approx(1.85, abs=0.01)


# -- MicroNet score on ONNX graphs ---------------------------------------------------------------

@pytest.fixture
def tiny_onnx(tmp_path):
    from export.onnx import export_onnx
    net = TinyNet()
    net.initialize()
    path = str(tmp_path / 'tiny.onnx')
    # hard-swish as one HardSwish op; the shuffle kept explicit so that count_shuffle sees it
    export_onnx(net, path, (1,) + TINY_SHAPE, opset=14, shuffle='reshape')
    return net, path


@pytest.mark.integration
@pytest.mark.parametrize('bits', [32, 16, 8])
def test_onnx_score_equals_mxnet_score(tiny_onnx, bits):
    net, path = tiny_onnx
    expected = micronet_score(net, TINY_SHAPE, bits=bits, count_shuffle=True)
    report = micronet_score(path, bits=bits, count_shuffle=True)
    assert (report.params, report.mults, report.adds) == \
        (expected.params, expected.mults, expected.adds)


def _quantize(path, out, quant_format):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.RandomState(0)
            self._batches = iter([{'data': rng.rand(1, *TINY_SHAPE).astype('float32')}
                                  for _ in range(2)])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(path, out, Reader(), quant_format=getattr(QuantFormat, quant_format),
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


def _dot_rows(report):
    return sorted((r.params, r.mults, r.adds) for r in report.layers
                  if r.op_type in ('Conv', 'QLinearConv', 'Gemm', 'QGemm'))


@pytest.mark.integration
@pytest.mark.parametrize('quant_format', ['QDQ', 'QOperator'])
def test_quantized_onnx_takes_bits_from_the_graph(tiny_onnx, tmp_path, quant_format):
    """int8 weights and activations: every conv/FC costs what the 8-bit scenario says."""
    _, path = tiny_onnx
    quantized = _quantize(path, str(tmp_path / 'q.onnx'), quant_format)
    report = micronet_score(quantized)
    assert report.bits == 'graph' and 'from the graph' in report.conventions
    assert _dot_rows(report) == _dot_rows(micronet_score(path, bits=8))
    with pytest.raises(ProfilingError, match='declares its own bit widths'):
        micronet_score(quantized, bits=8)
