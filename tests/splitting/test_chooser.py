"""The chooser on fixed hand-made profiles, and DynamicSplit driven through its protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from splitting.chooser import ChooserInputs, ChooserParams, Decision, FallbackRule, choose
from splitting.estimators import LinkEstimate
from splitting.latency import ServerEstimate
from splitting.policy import DynamicSplit, FixedSplit, SplitPolicy
from splitting.traces import UplinkTrace
from tests.support.policy_runs import Link, run_device, telemetry
from tests.support.toy_model import LOCAL, toy_device, toy_model_profile, toy_server

IDLE = ServerEstimate(
    queue_ms=dict.fromkeys(range(4), 0.0), service_ms={0: 4.0, 1: 3.5, 2: 2.0, 3: 1.0}
)


def decide(
    rate_bps: float | None, server: ServerEstimate | None = IDLE, **link: object
) -> Decision:
    estimate = LinkEstimate(rate_bps=rate_bps, rtt_s=0.040, **link)  # type: ignore[arg-type]
    return choose(ChooserInputs(device=toy_device(), link=estimate, server=server))


# -- the pure chooser -------------------------------------------------------------------------


def test_fast_link_sends_the_input():
    decision = decide(10e6)
    assert decision.k == 0
    assert decision.predicted_ms[0] < decision.predicted_ms[2] < decision.predicted_ms[LOCAL]


def test_moderate_link_sends_the_bottleneck():
    decision = decide(0.5e6)  # 60 kB take 120 ms, the 6 kB bottleneck 12 ms
    assert decision.k == 2


def test_dead_link_runs_locally():
    assert decide(1_000.0).k == LOCAL


def test_a_stalled_link_runs_locally_and_says_why():
    decision = decide(1_000.0, stalled=True)
    assert (decision.k, decision.reason) == (LOCAL, "stalled uplink")


def test_heavy_server_load_moves_the_choice_to_local():
    assert decide(10e6).k == 0
    busy = ServerEstimate(queue_ms=dict.fromkeys(range(4), 150.0), service_ms=IDLE.service_ms)
    assert decide(10e6, busy).k == LOCAL


def test_moderate_server_load_moves_the_choice_to_the_cheaper_tail():
    # Queueing is the same for every split, but a loaded batch slows the whole-model tail more.
    loaded = ServerEstimate(
        queue_ms=dict.fromkeys(range(4), 20.0), service_ms={0: 60.0, 1: 50.0, 2: 8.0, 3: 4.0}
    )
    assert decide(4e6).k == 0
    assert decide(4e6, loaded).k == 2


def test_no_worker_or_no_measurement_runs_locally():
    assert decide(10e6, server=None).reason == "no worker"
    assert decide(10e6, server=None).k == LOCAL
    assert decide(None).k == LOCAL
    assert decide(None).reason == "uplink unmeasured"


def test_only_candidates_are_chosen_but_every_split_is_predicted():
    decision = decide(10e6)
    assert set(decision.predicted_ms) == {0, 1, 2, 3, 4}
    for rate in (1e4, 3e5, 1e6, 3e6, 1e7, 1e8):
        assert decide(rate).k in toy_device().candidates


def test_hysteresis_keeps_a_near_equal_previous_split():
    link = LinkEstimate(rate_bps=1.2e6, rtt_s=0.040)
    device = toy_device()
    free = choose(ChooserInputs(device=device, link=link, server=IDLE))
    other = 2 if free.k == 0 else 0
    gap = free.predicted_ms[other] / free.predicted_ms[free.k] - 1
    sticky = ChooserParams(hysteresis=min(0.99, gap + 0.01))
    kept = choose(ChooserInputs(device, link, IDLE, params=sticky, previous_k=other))
    assert (kept.k, kept.reason) == (other, "hysteresis")


def test_risk_prices_a_volatile_link():
    calm = decide(0.9e6, spread=0.0)
    assert calm.k == 2
    volatile = choose(
        ChooserInputs(
            toy_device(),
            LinkEstimate(rate_bps=0.9e6, rtt_s=0.040, spread=5.0),
            IDLE,
            params=ChooserParams(risk=1.0),
        )
    )
    assert volatile.k == LOCAL


def test_fallback_deadline_rule():
    rule = FallbackRule(factor=2.0, margin_ms=60.0, cap_ms=1500.0)
    assert rule.deadline_ms(50.0) == pytest.approx(160.0)
    assert rule.deadline_ms(2000.0) == 1500.0
    assert rule.deadline_ms(None) == 1500.0
    assert rule.deadline_ms(float("inf")) == 1500.0


# -- DynamicSplit through the SplitPolicy protocol --------------------------------------------


def outage_trace(start_s: float = 5.0, end_s: float = 10.0) -> UplinkTrace:
    """One 1448-byte opportunity per ms (~11.6 Mbit/s), none between start and end."""
    ms = np.arange(1, 60_001)
    up = (ms < start_s * 1000) | (ms >= end_s * 1000)
    return UplinkTrace(ms[up], period_ms=60_000, name="outage")


def dynamic(**options: Any) -> DynamicSplit:
    return DynamicSplit.build(toy_device(), server_profile=toy_server(), **options)


def test_dynamic_offloads_on_a_good_link_once_it_has_measured_it():
    policy = dynamic()
    chosen = run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    assert chosen[0] == LOCAL  # nothing measured yet: run locally and probe
    assert chosen[-3:] == [2] * 3  # the 6 kB bottleneck beats the 60 kB input here


def test_without_probing_or_re_tests_the_policy_stays_local_forever_after_an_outage():
    policy = dynamic(probe_size=0, explore_after_s=0)
    link = Link(outage_trace(5.0, 10.0))
    policy.on_uplink_sample(6_000, 0.045, 0.0)  # measured once (by an earlier offload)
    before = run_device(policy, link, 0.0, 5.0)
    assert before[-1] == 2
    during = run_device(policy, link, 5.0, 10.0)
    assert during[-1] == LOCAL
    after = run_device(policy, link, 10.0, 40.0)  # the link is back: nothing measures it
    assert after[-20:] == [LOCAL] * 20
    assert policy.prober.probes == 0


def test_with_probing_the_policy_returns_to_offloading_when_the_link_recovers():
    policy = dynamic()
    link = Link(outage_trace(5.0, 10.0))
    assert run_device(policy, link, 0.0, 5.0)[-1] == 2
    assert run_device(policy, link, 5.0, 10.0)[-1] == LOCAL
    after = run_device(policy, link, 10.0, 40.0)
    assert after[-20:] == [2] * 20
    assert policy.prober.probes > 0


def test_an_outage_is_seen_from_the_publish_still_in_flight():
    policy = dynamic()
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    policy.on_telemetry("w1", telemetry(5.0), 5.0)
    assert policy.choose(5.0).k == 2
    policy.on_uplink_sent(6_000, 5.0)  # no PUBACK comes back
    assert policy.choose(5.03).k == 2  # 30 ms: the PUBACK is not due yet
    stuck = policy.choose(7.0)
    assert (stuck.k, stuck.reason) == (LOCAL, "stalled uplink")


def test_stale_telemetry_or_a_gone_worker_means_no_offload():
    policy = dynamic()
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    assert policy.choose(5.0).k == 2
    assert policy.choose(8.5).reason == "no worker"  # last telemetry at 4.0 s: 4.5 s old
    policy.on_telemetry("w1", telemetry(9.0), 9.0)
    assert policy.choose(9.0).k == 2
    policy.on_telemetry("w1", None, 9.1)  # its status went offline
    assert policy.choose(9.2).k == LOCAL


def test_reported_heavy_load_moves_dynamic_to_local():
    policy = dynamic()
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    heavy = telemetry(
        5.0, queue_depth=1280, batch_size=64.0, utilization=1.0, service_ms={"toy": {0: 8.0}}
    )
    policy.on_telemetry("w1", heavy, 5.0)
    assert policy.choose(5.1).k == LOCAL
    assert policy.load_aware
    naive = dynamic(load_aware=False)
    run_device(naive, Link(outage_trace(start_s=50)), 0.0, 5.0)
    naive.on_telemetry("w1", heavy, 5.0)
    assert naive.choose(5.1).k == 2  # the Neurosurgeon-style baseline ignores the load


def test_deadline_follows_the_prediction_and_local_needs_none():
    policy = dynamic(fallback=FallbackRule(factor=2.0, margin_ms=60.0, cap_ms=1500.0))
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    decision = policy.choose(5.0)
    assert decision.k == 2
    assert policy.deadline_ms(decision) == pytest.approx(2 * decision.predicted_ms[2] + 60)
    assert policy.deadline_ms(Decision(k=LOCAL, reason="x")) is None


def test_measured_device_times_replace_the_profile():
    policy = dynamic()
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 5.0)
    policy.on_device_time(LOCAL, 40.0, 5.0)  # 4x faster than the profile says
    decision = policy.choose(5.0)
    assert decision.predicted_ms[LOCAL] == pytest.approx(40.0)
    assert decision.k == LOCAL  # faster than any offload now


def test_pinned_dynamic_answers_its_split_with_predictions():
    policy = dynamic(pin=2)
    run_device(policy, Link(outage_trace(start_s=50)), 0.0, 3.0)
    decision = policy.choose(3.0)
    assert decision.k == 2
    assert decision.predicted_ms[2] > 0
    assert policy.probe_bytes(3.0) == 0


def test_for_device_builds_from_what_the_device_node_has(tmp_path):
    server_path = tmp_path / "server.json"
    toy_server().save(server_path)
    policy = DynamicSplit.for_device(
        profile=toy_model_profile(),
        codec="int8",
        slowdown=2.0,
        deadline_ms=800.0,
        server_profile=str(server_path),
    )
    assert policy.device.local_ms == pytest.approx(80.0)
    assert policy.fallback.cap_ms == 800.0
    assert policy.server_profile is not None


def test_fixed_split_is_a_policy_with_a_fixed_deadline():
    fixed: SplitPolicy = FixedSplit(2, deadline_ms=300.0)
    assert fixed.choose(0.0).k == 2
    assert fixed.deadline_ms(fixed.choose(0.0)) == 300.0
    assert fixed.probe_bytes(0.0) == 0
    with pytest.raises(ValueError):
        FixedSplit(-1)


def test_expected_latency_prices_the_fallback_of_a_slow_transfer():
    """The same predicted mean on a certain and an uncertain link: with a tight deadline, the
    uncertain one is expected to take longer, because each slow transfer costs the deadline
    plus the local tail; racing bounds every outcome by the device's own run."""
    from splitting.chooser import expected_ms
    from splitting.latency import Breakdown

    part = Breakdown(k=0, device_ms=10.0, uplink_ms=60.0, server_ms=20.0, downlink_ms=10.0)
    certain = expected_ms(part, spread=0.0, tail_ms=150.0, deadline_ms=120.0)
    uncertain = expected_ms(part, spread=0.8, tail_ms=150.0, deadline_ms=120.0)
    assert certain == pytest.approx(part.total_ms)
    assert uncertain > certain + 10
    raced = expected_ms(part, spread=3.0, tail_ms=150.0, deadline_ms=None)
    assert raced <= 10.0 + 150.0 + 1e-9
    assert raced < expected_ms(part, spread=3.0, tail_ms=150.0, deadline_ms=120.0)


def test_racing_makes_an_uncertain_offload_worth_trying():
    """Split 2 predicted at 165 ms against 160 ms locally: without racing the device stays
    local; racing on an uncertain link, the fast transfers win and the slow ones cost only the
    device's own run, so the expectation offloads."""

    def choice(spread: float, racing: bool) -> int:
        estimate = LinkEstimate(rate_bps=0.06e6, rtt_s=0.040, spread=spread)
        return choose(ChooserInputs(toy_device(), estimate, IDLE, racing=racing)).k

    assert choice(0.0, racing=False) == LOCAL
    assert choice(0.0, racing=True) == LOCAL  # a certain loss is not worth racing
    assert choice(0.8, racing=False) == LOCAL
    assert choice(0.8, racing=True) == 2
