"""The SPOS search space (SPEC §1): constants, the ``Arch`` description and its JSON form.

Everything that describes a network without building it: no Gluon blocks and no MXNet calls here
(the ``nas`` package itself still imports MXNet on import, to fail early when it is missing).
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass, field, asdict
from typing import Tuple

from .atomic import read_json, write_json
from .errors import ArchError

__all__ = ['BLOCK_NAMES', 'CHANNEL_SCALES', 'LAYOUTS', 'STAGE_REPEATS', 'NUM_POSITIONS',
           'SearchSpace', 'Arch', 'ceil8', 'mid_channels']

BLOCK_NAMES = ('SNB-3x3', 'SNB-5x5', 'SNB-7x7', 'SXB-3x3')
NUM_BLOCKS = len(BLOCK_NAMES)
CHANNEL_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
NUM_SCALES = len(CHANNEL_SCALES)
STAGE_REPEATS = (4, 4, 8, 4)
NUM_POSITIONS = sum(STAGE_REPEATS)
LAYOUTS = {'OneShot': (64, 160, 320, 640), 'ShuffleNetV2+': (48, 128, 256, 512)}
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 1024
SE_STAGES = (2, 3)  # 0-based stages 3 and 4 carry SE in the SE variant (SPEC §1.7)


def ceil8(value):
    """Round up to a multiple of 8 (SE reduction, ShuffleNetV2+ tail width)."""
    return int(math.ceil(value / 8.0) * 8)


def mid_channels(stage_channels, scale_index):
    """Mid channels of a unit: floor((C_s // 2) * scale) in IEEE double (SPEC §1.5, P2: truncate)."""
    return int(math.floor((stage_channels // 2) * CHANNEL_SCALES[scale_index]))


@dataclass(frozen=True)
class SearchSpace:
    """The macro configuration shared by a supernet and all its subnets."""
    use_se: bool = False
    last_conv_after_pooling: bool = False
    layout: str = 'OneShot'
    input_size: int = 224
    classes: int = 1000

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ArchError('unknown channel layout %r; known: %s'
                            % (self.layout, ', '.join(LAYOUTS)))
        size = self.input_size
        if not isinstance(size, int) or size < 32 or size % 32:
            raise ArchError('input size %r is not a multiple of 32 (>= 32); use e.g. 32 or 224'
                            % (size,))
        if not isinstance(self.classes, int) or self.classes < 1:
            raise ArchError('classes must be a positive integer, got %r' % (self.classes,))

    @property
    def stage_channels(self) -> Tuple[int, ...]:
        return LAYOUTS[self.layout]

    @property
    def max_mid(self) -> int:
        """Width of a supernet channel-mask row: C of the last stage (SPEC §2.2)."""
        return self.stage_channels[-1]

    def position_layout(self):
        """Per position: (stage index, input channels, output channels, stride, input size)."""
        rows = []
        in_channels = STEM_CHANNELS
        size = self.input_size // 2
        for stage, (repeats, out_channels) in enumerate(zip(STAGE_REPEATS, self.stage_channels)):
            for k in range(repeats):
                stride = 2 if k == 0 else 1
                rows.append((stage, in_channels, out_channels, stride, size))
                if stride == 2:
                    size //= 2
                in_channels = out_channels
        return rows

    def stage_of(self, position):
        return self.position_layout()[position][0]

    def position_uses_se(self, position):
        return self.use_se and self.stage_of(position) in SE_STAGES

    def position_activation(self, position):
        """SPEC §1.7: SE variant uses ReLU in stage 1 and hard-swish afterwards."""
        if self.use_se and self.stage_of(position) > 0:
            return 'hswish'
        return 'relu'

    def replace(self, **changes):
        """A copy with the given fields changed; None values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def key(self):
        """A file-name-safe identifier of the configuration (lookup/latency table cache keys)."""
        return '%s_se%d_lcap%d_in%d_cls%d' % (self.layout.replace('+', 'plus'), self.use_se,
                                             self.last_conv_after_pooling, self.input_size,
                                             self.classes)


@dataclass(frozen=True)
class Arch:
    """A fixed subnet: 20 block choices, 20 channel-scale indices, and its search space."""
    blocks: Tuple[int, ...]
    channels: Tuple[int, ...]
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self):
        object.__setattr__(self, 'blocks', _check_vector('block', self.blocks, NUM_BLOCKS))
        object.__setattr__(self, 'channels', _check_vector('channel', self.channels, NUM_SCALES))

    def mid(self, position):
        stage_channels = self.space.stage_channels[self.space.stage_of(position)]
        return mid_channels(stage_channels, self.channels[position])

    def __str__(self):
        return '%s:%s' % (''.join(map(str, self.blocks)), ''.join(map(str, self.channels)))

    @classmethod
    def parse(cls, text, space=None):
        """Read the ``BLOCKS:CHANNELS`` digit form printed by ``str(arch)``."""
        parts = str(text).strip().split(':')
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ArchError('cannot parse architecture %r; expected 20 block digits, a colon and '
                            '20 channel digits, e.g. 00311100202110202132:65352634257546744543'
                            % (text,))
        return cls(tuple(map(int, parts[0])), tuple(map(int, parts[1])), space or SearchSpace())

    def with_space(self, **changes):
        """The same choices in a search space with some fields changed (input size, classes)."""
        return Arch(self.blocks, self.channels, self.space.replace(**changes))

    def to_dict(self):
        space = asdict(self.space)
        return {'blocks': list(self.blocks), 'channels': list(self.channels),
                'use_se': space['use_se'],
                'last_conv_after_pooling': space['last_conv_after_pooling'],
                'layout': space['layout'], 'input_size': space['input_size'],
                'classes': space['classes'], 'arch': str(self)}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ArchError('architecture JSON must be an object, got %s' % type(data).__name__)
        missing = [k for k in ('blocks', 'channels') if k not in data]
        if missing:
            raise ArchError('architecture JSON lacks key(s) %s' % ', '.join(missing))
        space_keys = ('use_se', 'last_conv_after_pooling', 'layout', 'input_size', 'classes')
        space = SearchSpace(**{k: data[k] for k in space_keys if k in data})
        return cls(tuple(data['blocks']), tuple(data['channels']), space)

    def save(self, path):
        """Write the architecture JSON atomically."""
        write_json(path, self.to_dict(), error=ArchError, indent=2)

    @classmethod
    def load(cls, path):
        """Read an architecture JSON (plain data only: nothing in it is executed)."""
        return cls.from_dict(read_json(path, ArchError, 'architecture file'))


def _check_vector(kind, values, num_choices) -> Tuple[int, ...]:
    try:
        values = tuple(values)
    except TypeError:
        raise ArchError('%s choices must be a sequence of %d ints, got %r'
                        % (kind, NUM_POSITIONS, values)) from None
    if len(values) != NUM_POSITIONS:
        raise ArchError('%s choice vector has %d entries; expected %d (one per position)'
                        % (kind, len(values), NUM_POSITIONS))
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or not 0 <= value < num_choices:
            raise ArchError('%s choice %r at position %d is out of range 0..%d'
                            % (kind, value, position, num_choices - 1))
    return tuple(int(v) for v in values)

