"""Every learned quantity returns to its prior as its evidence ages, and an option the chooser
stopped taking is re-tested at a bounded cost."""

from __future__ import annotations

import pytest

from splitting.estimators import (
    Belief,
    DeviceTimes,
    EstimatorError,
    OffloadFeedback,
    UplinkEstimator,
)
from splitting.exploration import Explorer, ExplorerError
from splitting.policy import DynamicSplit
from splitting.traces import UplinkTrace
from tests.support.policy_runs import Link, run_device
from tests.support.toy_model import LOCAL, toy_device, toy_server

# -- the aging rule ------------------------------------------------------------------------------


def test_a_belief_halves_its_distance_to_the_prior_every_half_life():
    belief = Belief(weight=1.0, half_life_s=10.0)
    assert belief.value(prior=50.0, now=0.0) == 50.0  # nothing learned: the prior
    belief.observe(150.0, now=0.0, prior=50.0)
    assert belief.value(50.0, 0.0) == pytest.approx(150.0)
    assert belief.value(50.0, 10.0) == pytest.approx(100.0)
    assert belief.value(50.0, 30.0) == pytest.approx(62.5)
    assert belief.evidence(1000.0) < 1e-9


def test_a_new_sample_is_blended_with_what_is_left_of_the_old_one():
    belief = Belief(weight=0.5, half_life_s=10.0)
    belief.observe(150.0, now=0.0, prior=50.0)
    belief.observe(50.0, now=10.0, prior=50.0)  # the old 150 had aged to 100 by then
    assert belief.value(50.0, 10.0) == pytest.approx(75.0)


def test_belief_settings_are_checked():
    with pytest.raises(EstimatorError):
        Belief(weight=0.0)
    with pytest.raises(EstimatorError):
        Belief(half_life_s=0.0)


def test_device_times_age_toward_the_prior_they_are_given():
    times = DeviceTimes(weight=1.0, half_life_s=30.0)
    times.on_measured(4, 340.0, now=0.0, prior_ms=40.0)  # one slow run at split 4
    assert times.estimate(4, 40.0, now=0.0) == pytest.approx(340.0)
    assert times.estimate(4, 40.0, now=60.0) == pytest.approx(40.0 + 300.0 / 4)
    assert times.estimate(5, 45.0, now=0.0) == 45.0  # never measured: the prior itself


def test_an_old_link_estimate_is_an_uncertain_one():
    link = UplinkEstimator(rtt_s=0.04, drift_per_s=0.02)
    link.on_sent(40_000, 0.0)
    link.on_sample(40_000, 0.1, 0.1)
    fresh, old = link.estimate(0.2), link.estimate(30.1)
    assert old.rate_bps == fresh.rate_bps  # the rate is kept ...
    assert old.spread**2 == pytest.approx(fresh.spread**2 + 0.02 * 29.9, rel=1e-3)  # ... less sure


# -- one place for each slowness --------------------------------------------------------------


def test_a_slow_head_is_excused_from_the_offload_bias():
    feedback = OffloadFeedback(prior_weight=0.0, min_excess_ms=1e9)
    feedback.on_offload(10.0, 60.0)
    feedback.on_result(360.0, 10.36, excused_ms=300.0)  # the head ran 300 ms over
    assert feedback.bias_ms(10.36) == pytest.approx(0.0)


def test_one_result_moves_the_bias_by_at_most_its_prediction():
    feedback = OffloadFeedback(prior_weight=2.0, min_excess_ms=25.0, hold_s=2.0)
    feedback.on_offload(10.0, 60.0)
    feedback.on_result(1560.0, 11.56)  # a cold worker: 1.5 s late
    assert feedback.bias_ms(11.56) == pytest.approx(60.0 / 3)  # clipped to 60, 2 pseudo-results
    # A brief surprise, half of the excess (one late result may be a one-off), which covers
    # the bias that the same result raised.
    assert feedback.penalty_ms(11.6, None) == pytest.approx(750.0, rel=1e-4)
    left = 0.5 ** (2.44 / 60.0)
    assert feedback.penalty_ms(14.0, None) == pytest.approx(60.0 * left / (left + 2.0))


def test_a_slow_first_head_does_not_pin_a_device_to_local():
    """The first head of a fresh thread ran 8x its profile. The device says it is not
    representative: it neither slows the device's estimate nor the offload's bias."""
    policy = DynamicSplit.build(toy_device(), server_profile=toy_server())
    link = Link(UplinkTrace.fixed_rate(4.0))
    run_device(policy, link, 0.0, 3.0)
    first = policy.choose(3.0)
    assert first.k < LOCAL
    head = first.device_ms or 0.0
    policy.on_device_time(first.k, 8 * head, 3.0, representative=False)
    policy.on_result(first.k, True, (first.expected_ms or 0.0) + 7 * head, 3.0 + 0.5)
    assert policy.choose(3.6).k < LOCAL


def test_an_unnoticed_slow_first_head_costs_at_most_one_more_local_choice():
    """The same slow first head, taken as typical: the device's speed and the split's time
    jump, yet within two decisions the device offloads again, and the belief fades."""
    policy = DynamicSplit.build(toy_device(), server_profile=toy_server())
    link = Link(UplinkTrace.fixed_rate(4.0))
    run_device(policy, link, 0.0, 3.0)
    first = policy.choose(3.0)
    head = first.device_ms or 0.0
    policy.on_device_time(first.k, 8 * head, 3.0)
    policy.on_result(first.k, True, (first.expected_ms or 0.0) + 7 * head, 3.5)
    following = [policy.choose(3.5 + 0.1 * i).k for i in range(2)]
    assert any(k < LOCAL for k in following)
    slow = policy.inputs(3.6).device_ms[first.k]
    # The split's own belief ages toward a prior that itself ages toward the profile: after
    # four half-lives (2 min) less than a quarter of the slowness is left.
    assert policy.inputs(123.6).device_ms[first.k] < head + (slow - head) / 4


# -- re-testing ---------------------------------------------------------------------------------


def test_re_tests_start_after_a_quiet_spell_and_back_off_while_local_wins():
    explorer = Explorer(after_s=2.0, max_s=8.0)
    assert not explorer.due(0.0)  # the clock starts here
    assert explorer.due(2.0)
    explorer.on_offload(2.0, exploring_against_ms=100.0)
    assert not explorer.due(10.0)  # one re-test at a time
    explorer.on_result(150.0, 2.15, offloaded=True)  # slower than local: local confirmed
    assert explorer.interval_s == 4.0
    assert not explorer.due(5.0) and explorer.due(6.0)
    explorer.on_offload(6.0, exploring_against_ms=100.0)
    explorer.on_result(40.0, 6.04, offloaded=True)  # faster than local: offloading pays again
    assert explorer.interval_s == 2.0
    assert (explorer.explorations, explorer.confirmed_local) == (2, 1)


def test_re_tests_back_off_to_the_cap_and_a_lost_result_does_not_block_them():
    explorer = Explorer(after_s=2.0, max_s=8.0)
    explorer.due(0.0)
    now = 2.0
    for _ in range(5):
        explorer.on_offload(now, exploring_against_ms=10.0)
        explorer.on_result(5.0, now + 0.005, offloaded=False)  # the local run won the race
        now += explorer.interval_s + 0.05
    assert explorer.interval_s == 8.0
    explorer.on_offload(now, exploring_against_ms=10.0)  # its result never comes
    assert explorer.due(now + 8.5)


def test_explorer_settings_are_checked():
    with pytest.raises(ExplorerError):
        Explorer(after_s=-1.0)
    assert not Explorer(after_s=0.0).due(100.0)  # 0: never


def test_a_device_that_went_local_re_tests_the_best_offload_as_a_race():
    """Slow measured heads made every offload look slow; the device re-tests the best one
    within `explore_after_s`, racing its own tail so the re-test cannot cost a local run."""
    policy = DynamicSplit.build(toy_device(), server_profile=toy_server(), explore_after_s=2.0)
    link = Link(UplinkTrace.fixed_rate(4.0))
    run_device(policy, link, 0.0, 1.0)
    for k in range(LOCAL):
        policy.on_device_time(k, 1000.0, 1.0)  # a belief gone bad ...
    policy.on_device_time(LOCAL, policy.device.local_ms, 1.0)  # ... and local as profiled
    assert policy.choose(1.0).k == LOCAL
    decisions = [policy.choose(1.0 + 0.1 * i) for i in range(1, 30)]
    explored = [d for d in decisions if d.reason == "explore"]
    assert len(explored) == 1  # one at a time, until its result says more
    assert explored[0].k < LOCAL and explored[0].race
    assert policy.explorer.explorations == 1
