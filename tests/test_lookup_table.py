"""Lookup table (SPEC §6.2): table sums equal the general counter; anchors; cache and config."""
import json
import os

import numpy as np
import pytest

from nas.counting import count_net
from nas.errors import ArchError
from nas.lookup_table import LookupTable, cache_path, default_cache_dir
from nas.network import OneShotNet
from nas.space import Arch, SearchSpace

SE_PLUS = SearchSpace(use_se=True, last_conv_after_pooling=True)
PLAIN = SearchSpace()
SE_ONLY = SearchSpace(use_se=True)  # ShuffleNetV2+-style tail: conv 768, SE, conv 1024
# (space, seed): 5 x 40 = 200 random (block, channel) vectors in all
VARIANTS = [
    (SE_PLUS, 1),
    (PLAIN, 2),
    (SE_ONLY, 3),
    (SE_PLUS.replace(input_size=32, classes=10), 4),
    (SE_ONLY.replace(layout='ShuffleNetV2+', input_size=32), 5),
]
ARCHS_PER_VARIANT = 40


@pytest.fixture(scope='module')
def table_of():
    """Build each space's table once per module."""
    tables = {}

    def get(space):
        if space not in tables:
            tables[space] = LookupTable.build(space)
        return tables[space]
    return get


def _random_archs(space, seed, count):
    rng = np.random.RandomState(seed)
    return [Arch(tuple(rng.randint(0, 4, 20)), tuple(rng.randint(0, 10, 20)), space)
            for _ in range(count)]


@pytest.mark.parametrize('space, seed', VARIANTS, ids=[s.key() for s, _ in VARIANTS])
def test_table_sum_equals_the_counter(table_of, space, seed):
    table = table_of(space)
    for arch in _random_archs(space, seed, ARCHS_PER_VARIANT):
        report = count_net(OneShotNet(arch), (3, space.input_size, space.input_size))
        assert table.cost(arch) == (report.flops, report.params), str(arch)


def test_anchors_of_the_se_after_pooling_table(table_of):
    """SPEC §6.2 anchors (the reference's shipped table), in units."""
    table = table_of(SE_PLUS)
    assert (table.flops['input_block'], table.params['input_block']) == (5419008, 464)
    assert (table.flops['output_block'], table.params['output_block']) == (1712744, 1681384)
    row = table.flops['nas_block'][0][0]
    assert (row[0], row[9]) == (3531136, 25539584)
    assert row == sorted(row)  # wider is dearer


@pytest.mark.parametrize('name, blocks, scales, space, flops, params', [
    ('oneshot', '00311100202110202132', '65352634257546744543', PLAIN, 327909096, 3433579),
    ('oneshot_plus', '00311100202110202132', '65352634257546744543', SE_PLUS,
     297058024, 3742955),
    ('oneshot_s_plus', '00010010320122120020', '87685734242345663346', SE_PLUS,
     291475944, 3541829),
    ('max_flops', '23332333233333332333', '9' * 20, SE_PLUS, 849514600, 6986392),
    ('max_params', '3' * 20, '9' * 20, SE_PLUS, 811045288, 7479880),
    ('min_flops', '30003000300000003000', '0' * 20, SE_PLUS, 64162984, 2416402),
    ('min_params', '0' * 20, '0' * 20, SE_PLUS, 71087272, 2403296),
    ('all_sxb_plain', '3' * 20, '9' * 20, PLAIN, 841896360, 7170504),
])
def test_spec_verified_paths_through_the_table(table_of, name, blocks, scales, space, flops,
                                               params):
    """SPEC §8 [verified] figures."""
    arch = Arch.parse('%s:%s' % (blocks, scales), space)
    assert table_of(space).cost(arch) == (flops, params)


def test_min_cost_is_the_spec_minimum(table_of):
    """Per-position minima give the SPEC §8 min-FLOPs and min-params paths' figures."""
    assert table_of(SE_PLUS).min_cost() == (64162984, 2403296)


def test_cost_of_another_space_is_refused(table_of):
    arch = Arch((0,) * 20, (0,) * 20, SE_PLUS.replace(classes=10))
    with pytest.raises(ArchError, match='lookup table of OneShot_se1_lcap1_in224_cls1000'):
        table_of(SE_PLUS).cost(arch)


# -- files and cache ----------------------------------------------------------------------------

def test_json_round_trip_in_counts_and_in_millions(table_of, tmp_path):
    table = table_of(SE_PLUS)
    for millions in (False, True):
        path = str(tmp_path / ('table_%d.json' % millions))
        table.save(path, millions=millions)
        with open(path) as handle:
            data = json.load(handle)
        assert data['config']['use_se'] is True and data['config']['input_size'] == 224
        assert data['flops']['input_block'] == (5.419008 if millions else 5419008)
        assert data['params']['output_block'] == (1.681384 if millions else 1681384)
        loaded = LookupTable.load(path, SE_PLUS)
        assert (loaded.flops, loaded.params) == (table.flops, table.params)
    assert sorted(os.listdir(tmp_path)) == ['table_0.json', 'table_1.json']  # no temp files


def test_reference_layout_without_unit_or_classes_reads_as_millions(table_of, tmp_path):
    """The reference's file has values in M and no classes (1000)."""
    data = table_of(SE_PLUS).to_dict(millions=True)
    del data['unit'], data['config']['classes']
    path = tmp_path / 'lookup_table_se_lastConvAfterPooling_OneShot.json'
    path.write_text(json.dumps(data))
    loaded = LookupTable.load(str(path))
    assert loaded.space == SE_PLUS
    assert loaded.params['nas_block'] == table_of(SE_PLUS).params['nas_block']


def test_load_or_build_caches_under_mxnet_home(table_of, tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    assert default_cache_dir() == os.path.join(str(tmp_path), 'oneshot_nas', 'lookup')
    built = []

    def fake_build(cls, space):
        built.append(space)
        return table_of(space)
    monkeypatch.setattr(LookupTable, 'build', classmethod(fake_build))
    first = LookupTable.load_or_build(SE_PLUS)
    second = LookupTable.load_or_build(SE_PLUS)
    assert built == [SE_PLUS]  # the second call read the file
    assert os.path.isfile(cache_path(SE_PLUS))
    assert cache_path(SE_PLUS).endswith('lookup_table_OneShot_se1_lcap1_in224_cls1000.json')
    assert second.cost(Arch((3,) * 20, (9,) * 20, SE_PLUS)) == (811045288, 7479880)
    assert second.flops == first.flops
    other_dir = str(tmp_path / 'elsewhere')
    LookupTable.load_or_build(SE_PLUS, cache_dir=other_dir)
    assert built == [SE_PLUS, SE_PLUS] and os.listdir(other_dir)


def test_table_of_another_space_is_a_clear_error(table_of, tmp_path):
    """A file at the cache path of one space that holds another space's table is refused."""
    wrong = cache_path(PLAIN, str(tmp_path))
    table_of(SE_PLUS).save(wrong)
    with pytest.raises(ArchError, match='is for the search space OneShot_se1_lcap1_in224_cls1000,'
                                        ' not OneShot_se0_lcap0_in224_cls1000'):
        LookupTable.load_or_build(PLAIN, cache_dir=str(tmp_path))


def test_stale_or_broken_files_are_refused(table_of, tmp_path):
    data = table_of(SE_PLUS).to_dict()
    data['config']['stage_out_channels'] = [64, 160, 320, 512]
    stale = tmp_path / 'stale.json'
    stale.write_text(json.dumps(data))
    with pytest.raises(ArchError, match='stage_out_channels differ'):
        LookupTable.load(str(stale))
    broken = tmp_path / 'broken.json'
    broken.write_text('{"config": ')
    with pytest.raises(ArchError, match='invalid JSON.*delete it to rebuild'):
        LookupTable.load(str(broken))
    empty = tmp_path / 'empty.json'
    empty.write_text('{}')
    with pytest.raises(ArchError, match='needs config, flops and params'):
        LookupTable.load(str(empty))
    with pytest.raises(ArchError, match='cannot read lookup table'):
        LookupTable.load(str(tmp_path / 'missing.json'))
