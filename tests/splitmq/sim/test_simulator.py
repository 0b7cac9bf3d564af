"""Simulator invariants: one result per request, the oracle's hindsight, exact timing, fallback."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.sim.runner import SimSettings, Simulation
from splitmq.sim.scenarios import make_load
from splitmq.sim.strategies import evaluate, oracle_agreement
from splitmq.sim.system import DeviceCpu
from splitting.policy import DynamicSplit
from splitting.traces import UplinkTrace, wire_bytes
from tests.support.toy_model import toy_device, toy_server

LOCAL = 4


def outage_trace(start_s: float, end_s: float, period_s: int = 60) -> UplinkTrace:
    """One 1448-byte opportunity per ms, none between start and end."""
    ms = np.arange(1, period_s * 1000 + 1)
    up = (ms < start_s * 1000) | (ms >= end_s * 1000)
    return UplinkTrace(ms[up], period_ms=period_s * 1000, name="outage")


def simulation(trace: UplinkTrace, load: str = "idle", **settings: object) -> Simulation:
    values: dict = {"duration_s": 60.0, "rate_hz": 2.0}
    values.update(settings)
    config = SimSettings(**values)
    return Simulation(toy_device(), toy_server(), trace, make_load(load, config.duration_s), config)


def test_every_request_gets_exactly_one_result():
    sim = simulation(outage_trace(20, 30), load="switching")
    result = evaluate(sim, toy_server())
    for name, run in result.runs.items():
        assert run.k.size == run.latency_ms.size == run.arrival_s.size, name
        assert np.all(np.isfinite(run.latency_ms)) and np.all(run.latency_ms > 0), name
        assert not np.any(run.offloaded & run.fallback), name  # a result or a fallback, not both
        assert np.all(run.offloaded | run.fallback | (run.k == LOCAL)), name
        # One request at a time: the next starts after the previous finished.
        done = run.arrival_s + run.latency_ms / 1000
        assert np.all(run.arrival_s[1:] >= done[:-1] - 1e-9), name


def test_oracle_is_at_least_as_fast_as_every_fixed_split_on_every_request():
    # Requests never overlap (a good link, 2 Hz): every strategy meets the same state.
    sim = simulation(UplinkTrace.fixed_rate(4.0), load="switching")
    result = evaluate(sim, toy_server())
    oracle = result.runs["oracle"]
    for k in range(LOCAL + 1):
        fixed = result.runs[f"fixed_{k}"]
        assert np.array_equal(fixed.arrival_s, oracle.arrival_s)
        assert np.all(oracle.latency_ms <= fixed.latency_ms + 1e-9), k
    # And the oracle does use its freedom: both offloading and local win sometimes.
    assert len(set(oracle.k.tolist())) > 1


def test_static_best_is_the_fixed_split_with_the_lowest_mean():
    sim = simulation(UplinkTrace.fixed_rate(4.0), load="switching")
    result = evaluate(sim, toy_server())
    means = {k: result.runs[f"fixed_{k}"].latency_ms.mean() for k in range(LOCAL + 1)}
    assert result.static_best_k == min(means, key=means.__getitem__)
    assert result.runs["static_best"].latency_ms.mean() == pytest.approx(min(means.values()))
    assert result.runs["local"].latency_ms.mean() == pytest.approx(means[LOCAL])
    assert result.runs["offload"].latency_ms.mean() == pytest.approx(means[0])


def test_one_offload_is_timed_exactly():
    trace = UplinkTrace.fixed_rate(1500 * 8 / 1000)  # one opportunity per ms
    sim = simulation(trace, one_way_ms=20.0)
    state = sim.new_state()
    outcome = state.run(2, 1.0, None)
    device = toy_device()
    cost = device.costs[2]
    head_end = 1.0 + cost.device_ms / 1000
    packets = -(-wire_bytes(cost.payload_bytes) // 1448)
    released = (np.ceil(head_end * 1000) + packets - 1) / 1000  # one opportunity per ms
    tail_ms = toy_server().tail_ms("toy", 2, 1)
    expected = released + 0.020 + (cost.decode_ms + tail_ms) / 1000 + 0.020
    assert outcome.offloaded and not outcome.fallback
    assert outcome.done_s == pytest.approx(expected)


def test_a_late_result_falls_back_to_the_local_tail_after_the_deadline():
    sim = simulation(outage_trace(0.5, 30))
    state = sim.new_state()
    outcome = state.run(2, 1.0, 150.0)
    device = toy_device()
    assert outcome.fallback and not outcome.offloaded
    assert outcome.latency_ms == pytest.approx(150.0 + device.local_tail_ms(2))


def test_after_an_outage_dynamic_returns_by_probing_or_by_re_testing_and_stays_local_without():
    trace = outage_trace(10, 15)
    sim = simulation(trace, duration_s=50.0)
    blind = DynamicSplit.build(
        toy_device(), probe_size=0, explore_after_s=0, server_profile=toy_server()
    )
    blind.on_uplink_sample(6_000, 0.045, 0.0)  # measured once, by an earlier offload
    stuck = sim.run_policy("blind", blind)
    probing = sim.run_policy(
        "dynamic", DynamicSplit.build(toy_device(), explore_after_s=0, server_profile=toy_server())
    )
    re_testing = DynamicSplit.build(toy_device(), probe_size=0, server_profile=toy_server())
    re_testing.on_uplink_sample(6_000, 0.045, 0.0)
    explored = sim.run_policy("re-testing", re_testing)
    before = (stuck.arrival_s > 5) & (stuck.arrival_s < 10)
    after = stuck.arrival_s > 30
    assert np.all(stuck.k[before] < LOCAL)  # offloading while the link is good ...
    assert np.all(stuck.k[after] == LOCAL)  # ... and never again after the outage
    assert stuck.probes == 0
    assert np.all(probing.k[probing.arrival_s > 30] < LOCAL)
    assert probing.probes > 0
    assert explored.probes == 0
    assert np.all(explored.k[explored.arrival_s > 30] < LOCAL)
    assert 0 < re_testing.explorer.explorations < 10  # a few re-tests, backing off in the outage


def test_load_switch_is_seen_from_on_change_telemetry_within_the_gap():
    sim = simulation(UplinkTrace.fixed_rate(4.0), load="switching", duration_s=120.0)
    heavy = sim.load.heavy
    switch = int(np.flatnonzero(np.diff(heavy.astype(int)) == 1)[0]) + 1
    switch_s = switch * 0.1
    sent = [t - 0.020 for t, _, _ in sim.telemetry]
    after = [t for t in sent if t >= switch_s - 1e-9]
    assert after[0] - switch_s <= 0.1 + 1e-9
    message = sim.telemetry[sent.index(after[0])][2]
    assert message.queue_depth > 256 and message.batch_size == 64


def test_oracle_agreement_matches_requests_by_start_time():
    sim = simulation(UplinkTrace.fixed_rate(4.0))
    oracle = sim.run_oracle()
    assert oracle_agreement(oracle, oracle) == 1.0
    local = sim.run_policy("local", DynamicSplit.build(toy_device(), pin=LOCAL))
    expected = float(np.mean(oracle.k == LOCAL))
    assert oracle_agreement(local, oracle) == pytest.approx(expected)


def test_device_cpu_places_jobs_in_the_first_gap_that_fits():
    cpu = DeviceCpu()
    assert cpu.reserve(1.0, 0.5) == (1.0, 1.5)
    assert cpu.reserve(3.0, 1.0) == (3.0, 4.0)
    assert cpu.reserve(1.2, 1.0) == (1.5, 2.5)  # fits between the two
    assert cpu.reserve(2.0, 1.0) == (4.0, 5.0)  # does not fit before 3.0
    assert cpu.run_head(0.0, 0.1) == (0.0, 0.1)
    assert cpu.run_head(0.05, 0.1)[0] >= 0.1


def test_pipelined_requests_start_at_their_arrival():
    sim = simulation(UplinkTrace.fixed_rate(4.0), rate_hz=20.0, pipelined=True, duration_s=5.0)
    run = sim.run_policy("local", DynamicSplit.build(toy_device(), pin=LOCAL))
    assert np.allclose(np.diff(run.arrival_s), 0.05)
    assert run.latency_ms[-1] > run.latency_ms[0]  # 160 ms each at 20 Hz: a growing queue


def test_knowing_the_past_capacity_reads_the_trace_not_the_future():
    """The ceiling estimator answers with what the trace delivered over the last window only:
    a trace that is fast in its first second and dead afterwards reads fast at t=1 s and
    dead 100 ms later."""
    from splitmq.sim.hindsight import PastCapacityEstimator
    from splitting.traces import PACKET_BYTES, UplinkTrace

    trace = UplinkTrace.parse("\n".join(str(ms) for ms in range(1, 1001)) + "\n10000\n")
    estimator = PastCapacityEstimator(trace, rtt_s=0.04, window_s=0.1)
    fast = estimator.estimate(1.0).rate_bps
    dead = estimator.estimate(1.2).rate_bps
    assert fast == pytest.approx(PACKET_BYTES * 1000, rel=0.02)
    assert dead is not None and dead <= 1.0
