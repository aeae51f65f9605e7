import json

import pytest

from nas.errors import ArchError
from nas.space import Arch, SearchSpace, mid_channels, LAYOUTS

ONESHOT = '00311100202110202132:65352634257546744543'


def test_mid_channel_table_matches_spec():
    # SPEC §1.5 table, used literally (truncation of (C_s // 2) * scale)
    assert [mid_channels(64, i) for i in range(10)] == [6, 12, 19, 25, 32, 38, 44, 51, 57, 64]
    assert [mid_channels(160, i) for i in range(10)] == list(range(16, 161, 16))
    assert [mid_channels(640, i) for i in range(10)] == list(range(64, 641, 64))
    assert [mid_channels(LAYOUTS['ShuffleNetV2+'][0], i) for i in range(10)] == \
        [4, 9, 14, 19, 24, 28, 33, 38, 43, 48]


def test_parse_and_str_round_trip():
    arch = Arch.parse(ONESHOT)
    assert str(arch) == ONESHOT
    assert Arch.parse(str(arch)) == arch
    assert arch.blocks[:4] == (0, 0, 3, 1)


def test_json_round_trip(tmp_path):
    arch = Arch.parse(ONESHOT, SearchSpace(use_se=True, input_size=64, classes=10))
    path = tmp_path / 'a.json'
    arch.save(str(path))
    data = json.loads(path.read_text())
    for key in ('blocks', 'channels', 'use_se', 'last_conv_after_pooling', 'input_size', 'classes'):
        assert key in data
    assert Arch.load(str(path)) == arch


@pytest.mark.parametrize('blocks,channels,message', [
    ((0,) * 19, (0,) * 20, 'block choice vector has 19 entries'),
    ((0,) * 7 + (4,) + (0,) * 12, (0,) * 20, 'block choice 4 at position 7 is out of range 0..3'),
    ((0,) * 20, (0,) * 3 + (10,) + (0,) * 16, 'channel choice 10 at position 3'),
    ((0,) * 20, (0,) * 5 + (-1,) + (0,) * 14, 'channel choice -1 at position 5'),
])
def test_bad_vectors_name_the_position(blocks, channels, message):
    with pytest.raises(ArchError, match=message):
        Arch(blocks, channels)


@pytest.mark.parametrize('size', [0, 16, 100, 225])
def test_input_size_must_be_multiple_of_32(size):
    with pytest.raises(ArchError, match='multiple of 32'):
        SearchSpace(input_size=size)


def test_bad_json_is_a_clear_error(tmp_path):
    path = tmp_path / 'bad.json'
    path.write_text('{"blocks": [0, 1]')
    with pytest.raises(ArchError, match='not a valid architecture file: invalid JSON'):
        Arch.load(str(path))
    with pytest.raises(ArchError, match='cannot parse architecture'):
        Arch.parse('0123')
