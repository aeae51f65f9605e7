"""A network's cost relative to a published comparison model: the Σ normalised score (SPEC §6.3)
and the search's ``combined`` (SPEC §5), which is Σ/2 so that ``combined <= 1`` means "no dearer
than the comparison model on average over FLOPs and params"."""
from .errors import UnknownModelError

__all__ = ['REFERENCE_MODELS', 'DEFAULT_REFERENCE', 'reference_costs', 'normalized_score',
           'combined_score']

# Published (FLOPs, params) of the comparison models (SPEC §5).
REFERENCE_MODELS = {
    'SinglePathOneShot': (328e6, 3.4e6),
    'MobileNetV3_large': (217e6, 5.4e6),
    'MobileNetV2_1.4': (585e6, 6.9e6),
    'ShuffleNetV2+_medium': (222e6, 5.6e6),
}
DEFAULT_REFERENCE = 'SinglePathOneShot'


def reference_costs(ref):
    """(FLOPs, params) of comparison model ``ref``; an unknown name lists the known ones."""
    if ref not in REFERENCE_MODELS:
        raise UnknownModelError('unknown comparison model %r; known: %s'
                                % (ref, ', '.join(REFERENCE_MODELS)))
    return REFERENCE_MODELS[ref]


def normalized_score(flops, params, ref=DEFAULT_REFERENCE):
    """Σ = F/F_ref + P/P_ref (SPEC §6.3)."""
    ref_flops, ref_params = reference_costs(ref)
    return flops / ref_flops + params / ref_params


def combined_score(flops, params, ref=DEFAULT_REFERENCE):
    """combined = 0.5·F/F_ref + 0.5·P/P_ref = Σ/2 (SPEC §5); a candidate is legal iff <= 1."""
    return normalized_score(flops, params, ref) / 2
