"""What makes a search candidate legal (SPEC §5): absolute limits and limits relative to a
comparison model through the normalised score."""
import math
from dataclasses import dataclass
from typing import Optional

from .errors import SearchError
from .normalized import DEFAULT_REFERENCE, combined_score, reference_costs

__all__ = ['Constraints', 'positive']


def positive(name, value):
    """Refuse 0, negative, NaN and infinite values of an optional limit (None passes)."""
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                  and value > 0):
        raise SearchError('%s must be a positive number, got %r' % (name, value))


@dataclass(frozen=True)
class Constraints:
    """What makes a candidate legal; None means no limit (SPEC §5).

    Absolute upper limits (FLOPs, params, ms, MicroNet score) and limits relative to the comparison
    model ``reference``: ``combined = 0.5·F/F_ref + 0.5·P/P_ref <= max_combined``, ``F/F_ref <=
    max_flop_ratio``, ``P/P_ref <= max_param_ratio``. Naming a ``reference`` without
    ``max_combined`` means the reference's rule, ``combined <= 1``. Every candidate's
    ``combined`` is recorded, limited or not (the balanced fitness reads it), against
    ``reference`` or, when none is named, SinglePathOneShot.
    """
    max_flops: Optional[float] = None
    max_params: Optional[float] = None
    max_latency_ms: Optional[float] = None
    max_micronet: Optional[float] = None
    reference: Optional[str] = None
    max_combined: Optional[float] = None
    max_flop_ratio: Optional[float] = None
    max_param_ratio: Optional[float] = None

    def __post_init__(self):
        for name in ('max_combined', 'max_flop_ratio', 'max_param_ratio'):
            positive(name, getattr(self, name))
        if self.reference is not None:
            reference_costs(self.reference)  # an unknown name lists the known ones
            if self.max_combined is None:
                object.__setattr__(self, 'max_combined', 1.0)

    @property
    def comparison(self):
        """The comparison model that ``combined`` and the ratio limits are measured against."""
        return self.reference or DEFAULT_REFERENCE

    def combined(self, costs):
        return combined_score(costs['flops'], costs['params'], self.comparison)

    def checks(self):
        """(cost key, limit in that key's unit, name) of every limit set; a ratio limit is
        given as the absolute FLOPs / params it allows."""
        ref_flops, ref_params = reference_costs(self.comparison)
        relative = [('flops', self.max_flop_ratio and self.max_flop_ratio * ref_flops,
                     'flop_ratio'),
                    ('params', self.max_param_ratio and self.max_param_ratio * ref_params,
                     'param_ratio'),
                    ('combined', self.max_combined, 'combined')]
        absolute = [('flops', self.max_flops, 'flops'), ('params', self.max_params, 'params'),
                    ('latency_ms', self.max_latency_ms, 'latency_ms'),
                    ('micronet', self.max_micronet, 'micronet')]
        return [(key, limit, name) for key, limit, name in absolute + relative
                if limit is not None]

    def violations(self, costs):
        """Names of the violated limits for a cost dict (``combined`` computed when absent)."""
        costs = dict(costs, combined=costs.get('combined', self.combined(costs)))
        bad = []
        for key, limit, name in self.checks():
            if costs.get(key) is None:
                raise SearchError('constraint on %s set but no %s cost is available (give '
                                  'a latency table for --max-latency-ms)' % (key, key))
            if costs[key] > limit:
                bad.append(name)
        return bad

    def describe(self):
        """The rule in words, e.g. 'combined <= 1 against SinglePathOneShot (328M, 3.4M)'."""
        units = {'flops': 'FLOPs', 'params': 'params', 'latency_ms': 'ms'}
        relative = [('combined', self.max_combined), ('F/F_ref', self.max_flop_ratio),
                    ('P/P_ref', self.max_param_ratio)]
        parts = ['%s <= %g' % (name, limit) for name, limit in relative if limit is not None]
        if parts:
            ref_flops, ref_params = reference_costs(self.comparison)
            parts[-1] += ' against %s (%gM FLOPs, %gM params)' % (
                self.comparison, ref_flops / 1e6, ref_params / 1e6)
        absolute = [(key, limit) for key, limit, name in self.checks() if name == key]
        parts += ['%s <= %s' % (key, _amount(limit, units.get(key, ''))) for key, limit in absolute
                  if key != 'combined']
        return ', '.join(parts) or 'no limits'


def _amount(value, unit):
    return ('%gM %s' % (value / 1e6, unit) if value >= 1e5 else '%g %s' % (value, unit)).strip()
