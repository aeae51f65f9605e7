import math
import time

import numpy as np
import pytest

from nas.errors import TrainingError
from nas.sampler import (CostBox, ConstrainedSampler, StrollingSampler, UniformSampler,
                         make_sampler)
from nas.schedule import ChannelSchedule, learning_rate, warmup_offset
from nas.space import Arch, SearchSpace

SPACE = SearchSpace(input_size=32, classes=10)
M = 1e6


def additive_cost(arch):
    """A cheap cost with the lookup table's structure (a sum over positions)."""
    flops = sum((b + 1) * (c + 1) for b, c in zip(arch.blocks, arch.channels)) * M
    params = 2 * M + 0.1 * M * sum(arch.channels)
    return flops, params


# --- schedules ---------------------------------------------------------------------------------

def test_warmup_table_oneshot_layout():
    # SPEC §3.4 row by row, then d(e) = e from 24 on
    expected = [0, 1, 2, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 24, 25, 40]
    got = [warmup_offset(e, 'OneShot') for e in list(range(25)) + [25, 40]]
    assert got == expected


def test_warmup_table_shufflenet_layout():
    expected = {0: 0, 1: 1, 2: 1, 3: 2, 5: 2, 6: 3, 9: 3, 10: 4, 14: 4, 15: 5, 20: 5, 21: 6,
                26: 6, 35: 6, 36: 7, 37: 37, 50: 50}
    assert {e: warmup_offset(e, 'ShuffleNetV2+') for e in expected} == expected


def test_channel_range_follows_the_allowed_indices_row():
    schedule = ChannelSchedule('OneShot', start_epoch=60, warmup=True)
    assert schedule.channel_range(0) == (9, 9)  # all channels before channel selection
    assert schedule.channel_range(59) == (9, 9)
    allowed = [schedule.channel_range(60 + e)[0] for e in (0, 1, 2, 3, 4, 6, 9, 13, 18, 24)]
    assert allowed == [8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    ignoring = ChannelSchedule('OneShot', start_epoch=0, warmup=True, ignore_first_two=True)
    assert ignoring.channel_range(30) == (2, 9)
    assert ChannelSchedule(warmup=False).channel_range(0) == (0, 9)


def test_learning_rate_linear_warmup_then_cosine_to_zero():
    base, warm, total = 0.4, 10, 110
    assert learning_rate(0, base, warm, total) == 0.0
    assert learning_rate(5, base, warm, total) == pytest.approx(0.2)
    assert learning_rate(10, base, warm, total) == pytest.approx(base)
    assert learning_rate(60, base, warm, total) == pytest.approx(base / 2)
    assert learning_rate(110, base, warm, total) == pytest.approx(0.0, abs=1e-12)
    lrs = [learning_rate(s, base, warm, total) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


# --- uniform sampling and modes ----------------------------------------------------------------

def test_uniform_path_is_a_function_of_seed_and_step():
    a, b = UniformSampler(SPACE, seed=3), UniformSampler(SPACE, seed=3)
    assert [a.sample(s, 0) for s in range(5)] == [b.sample(s, 0) for s in (0, 1, 2, 3, 4)]
    assert b.sample(7, 0) == a.sample(7, 0)  # order of calls does not matter
    assert a.sample(1, 0) != a.sample(2, 0)
    assert UniformSampler(SPACE, seed=4).sample(1, 0) != a.sample(1, 0)


def test_uniform_draws_are_uniform_over_choices():
    sampler = UniformSampler(SPACE, schedule=ChannelSchedule(warmup=False), seed=0)
    archs = [sampler.sample(s, 0) for s in range(500)]
    blocks = np.bincount(np.ravel([a.blocks for a in archs]), minlength=4) / (500 * 20)
    channels = np.bincount(np.ravel([a.channels for a in archs]), minlength=10) / (500 * 20)
    np.testing.assert_allclose(blocks, 0.25, atol=0.02)
    np.testing.assert_allclose(channels, 0.1, atol=0.015)


@pytest.mark.parametrize('mode', ['block', 'channel', 'joint'])
def test_modes_freeze_the_other_genes(mode):
    fixed = tuple([1, 2] * 10)
    sampler = UniformSampler(SPACE, mode=mode, fixed_blocks=fixed,
                             schedule=ChannelSchedule(warmup=False), seed=1)
    archs = [sampler.sample(s, 0) for s in range(30)]
    blocks = {a.blocks for a in archs}
    channels = {a.channels for a in archs}
    if mode == 'block':
        assert channels == {(9,) * 20} and len(blocks) == 30
    elif mode == 'channel':
        assert blocks == {fixed} and len(channels) == 30
    else:
        assert len(blocks) == 30 and len(channels) == 30


def test_channel_mode_needs_fixed_blocks():
    with pytest.raises(TrainingError, match='fixed_blocks'):
        UniformSampler(SPACE, mode='channel')


def test_warmup_restricts_sampled_channels():
    sampler = UniformSampler(SPACE, schedule=ChannelSchedule(start_epoch=2, warmup=True), seed=0)
    assert {c for s in range(20) for c in sampler.sample(s, 1).channels} == {9}
    assert {c for s in range(20) for c in sampler.sample(s, 2).channels} == {8, 9}
    assert {c for s in range(50) for c in sampler.sample(s, 2 + 9).channels} == set(range(2, 10))
    # validation paths follow the same per-epoch rule (SPEC §3.4)
    assert set(sampler.validation_arch(2 + 3).channels) <= {5, 6, 7, 8, 9}


# --- constrained (rejection) sampling ------------------------------------------------------------

def test_constrained_samples_stay_inside_the_box():
    box = CostBox(max_flops=250 * M, min_params=9 * M, max_params=12 * M)
    sampler = ConstrainedSampler(SPACE, additive_cost, box,
                                 schedule=ChannelSchedule(warmup=False), seed=0)
    costs = [additive_cost(sampler.sample(s, 0)) for s in range(100)]
    assert all(box.contains(f, p) for f, p in costs)
    assert sampler.sample(42, 0) == sampler.sample(42, 0)


def test_constrained_infeasible_box_fails_fast_with_a_clear_error():
    sampler = make_sampler('constrained', SPACE, cost=additive_cost,
                           box=CostBox(max_flops=1 * M), max_attempts=300)
    start = time.time()
    with pytest.raises(TrainingError, match='no path inside FLOPs'):
        sampler.sample(0, 0)
    assert time.time() - start < 5


def test_make_sampler_checks_its_arguments():
    with pytest.raises(TrainingError, match='cost function'):
        make_sampler('constrained', SPACE, box=CostBox(max_flops=M))
    with pytest.raises(TrainingError, match='needs FLOPs or params limits'):
        make_sampler('constrained', SPACE, cost=additive_cost)
    with pytest.raises(TrainingError, match='constrained or strolling'):
        make_sampler('uniform', SPACE, box=CostBox(max_flops=M))
    with pytest.raises(TrainingError, match='unknown sampler'):
        make_sampler('greedy', SPACE)
    with pytest.raises(TrainingError, match='limits are empty'):
        CostBox(min_flops=2 * M, max_flops=M)


# --- strolling evolution -------------------------------------------------------------------

BOX = CostBox(200 * M, 340 * M, 9 * M, 13 * M)


def strolling(**kwargs):
    return StrollingSampler(SPACE, additive_cost, BOX, schedule=ChannelSchedule(warmup=False),
                            seed=0, **kwargs)


def test_strolling_walk_visits_the_flops_slices_ping_pong():
    sampler = StrollingSampler(SPACE, additive_cost)  # SPEC defaults 190-330M, 2.8-5.0M
    uppers = [round(sampler.window(8 * phase)[1] / M, 6) for phase in range(14)]
    assert uppers == [330, 310, 290, 270, 250, 230, 210, 210, 230, 250, 270, 290, 310, 330]
    assert sampler.window(0)[0] == pytest.approx(310 * M)
    # even phase: first half maximises params with upper limits 5.0 -> ..., lower limit 2.8
    assert sampler.window(0)[2:] == (2.8 * M, 5.0 * M, True)
    lo, hi, maximise = sampler.window(3)[2:]
    assert (lo, maximise) == (2.8 * M, True) and hi == pytest.approx((5.0 - 3 * 2.2 / 7) * M)
    lo, hi, maximise = sampler.window(4)[2:]  # second half minimises: lower = value, upper 5.0
    assert (hi, maximise) == (5.0 * M, False) and lo == pytest.approx((5.0 - 4 * 2.2 / 7) * M)
    # odd phase: sub-phase index reversed, first half minimises
    assert sampler.window(8)[2:] == (2.8 * M, 5.0 * M, False)
    assert sampler.window(15)[2:] == (2.8 * M, 5.0 * M, True)
    assert sampler.window(112) == sampler.window(0)  # wraps after 14 * 8 sub-phases


def test_strolling_honours_the_configured_box_and_windows():
    sampler = strolling()
    per_epoch = 14 * 8  # one candidate per sub-phase
    inside_window = 0
    flops = []
    for batch in range(per_epoch):
        arch = sampler.sample(batch, 0, batch, per_epoch)
        f, p = additive_cost(arch)
        assert BOX.contains(f, p)
        flo, fhi, plo, phi, _ = sampler.window(batch)
        inside_window += flo <= f <= fhi and plo <= p <= phi
        flops.append(f)
    assert inside_window >= 0.9 * per_epoch
    # the walk covers the whole FLOPs range: every one of the 7 slices is visited
    slices = {min(int((f - BOX.min_flops) / (20 * M)), 6) for f in flops}
    assert slices == set(range(7))


def test_strolling_never_hangs_on_an_infeasible_window_or_box(caplog):
    tight = StrollingSampler(SPACE, additive_cost, CostBox(200 * M, 340 * M, 2 * M, 2.05 * M),
                             schedule=ChannelSchedule(warmup=False), seed=0, max_attempts=50)
    start = time.time()
    with pytest.raises(TrainingError, match='found no path inside'):
        tight.sample(0, 0, 0, 112)
    assert time.time() - start < 10
    assert 'sampling from the whole box' in caplog.text


def test_strolling_state_round_trip_continues_identically():
    first = strolling()
    path = [first.sample(s, 0, s, 112) for s in range(6)]
    state = first.state_dict()
    rest = [first.sample(s, 0, s, 112) for s in range(6, 12)]
    second = strolling()
    second.load_state_dict(state)
    assert [second.sample(s, 0, s, 112) for s in range(6, 12)] == rest
    assert state['parents'] and all(isinstance(p, str) for p in state['parents'])
    assert len(set(map(str, path + rest))) > 6


def test_sampler_state_refuses_another_configuration():
    state = strolling().state_dict()
    with pytest.raises(TrainingError, match='seed'):
        StrollingSampler(SPACE, additive_cost, BOX, seed=1).load_state_dict(state)
    with pytest.raises(TrainingError, match='kind'):
        UniformSampler(SPACE, seed=0).load_state_dict(state)


def test_samplers_return_valid_archs_of_the_space():
    arch = strolling().sample(0, 0, 0, 112)
    assert isinstance(arch, Arch) and arch.space == SPACE
    assert math.isfinite(additive_cost(arch)[0])
