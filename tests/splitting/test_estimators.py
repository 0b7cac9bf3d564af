"""Estimators: uplink rate (with the in-flight cap), probing, telemetry aging, feedback."""

from __future__ import annotations

import math

import pytest

from schemas.messages import TelemetryMessage
from splitting.estimators import (
    DeviceTimes,
    EstimatorError,
    OffloadFeedback,
    Prober,
    ServerView,
    UplinkEstimator,
)
from splitting.traces import wire_bytes

RTT = 0.040


def feed(estimator: UplinkEstimator, payload: int, rate_bps: float, at: float) -> None:
    """A publish of `payload` bytes over a link of `rate_bps` stream bytes/s, sent at `at`."""
    seconds = wire_bytes(payload) / rate_bps + RTT
    estimator.on_sent(payload, at)
    estimator.on_sample(payload, seconds, at + seconds)


def telemetry(worker: str = "w1", **fields: object) -> TelemetryMessage:
    values: dict = {
        "worker_id": worker,
        "ts": 1000.0,
        "seq": 1,
        "interval_s": 1.0,
        "device": "cpu",
        "models": {"m": [0, 1, 2]},
        "queue_depth": 0,
        "queue_capacity": 64,
        "in_flight": 0,
        "batch_size": 1.0,
        "max_batch": 8,
        "utilization": 0.0,
        "service_ms": {"m": {0: 5.0}},
        "served": 0,
        "rejected": 0,
        "expired": 0,
        "errors": 0,
    }
    values.update(fields)
    return TelemetryMessage(**values)


# -- uplink rate ------------------------------------------------------------------------------


def test_steady_samples_give_the_link_rate():
    estimator = UplinkEstimator(rtt_s=RTT)
    for i in range(5):
        feed(estimator, 15_000, 1e6, at=i * 0.5)
    estimate = estimator.estimate(3.0)
    assert estimate.rate_bps == pytest.approx(1e6, rel=1e-6)
    assert estimate.transfer_s(10_000) == pytest.approx(10_000 / 1e6 + RTT / 2)


def test_unmeasured_link_has_no_rate():
    estimate = UplinkEstimator().estimate(1.0)
    assert estimate.rate_bps is None
    assert math.isinf(estimate.transfer_s(1000))


def test_a_tiny_message_barely_moves_a_byte_weighted_estimate():
    estimator = UplinkEstimator(rtt_s=RTT)
    feed(estimator, 20_000, 1e6, at=0.0)
    # 60 bytes whose time is all RTT noise: taken alone it would claim a tenth of the rate.
    estimator.on_sample(60, RTT + 0.002, 0.1)
    assert estimator.estimate(0.2).rate_bps == pytest.approx(0.92e6, rel=0.02)


def test_newer_samples_outweigh_older_ones():
    estimator = UplinkEstimator(rtt_s=RTT, half_life_s=1.0)
    feed(estimator, 15_000, 1e6, at=0.0)
    feed(estimator, 15_000, 4e6, at=10.0)  # ten half-lives later
    assert estimator.estimate(10.1).rate_bps == pytest.approx(4e6, rel=0.01)


def test_last_mode_keeps_only_the_last_sample():
    estimator = UplinkEstimator(rtt_s=RTT, mode="last")
    feed(estimator, 15_000, 1e6, at=0.0)
    feed(estimator, 15_000, 3e6, at=0.2)
    assert estimator.estimate(0.3).rate_bps == pytest.approx(3e6)


def test_a_publish_stuck_in_flight_caps_the_rate_before_its_puback():
    estimator = UplinkEstimator(rtt_s=RTT)
    feed(estimator, 15_000, 1e6, at=0.0)
    estimator.on_sent(15_000, 1.0)
    expected = wire_bytes(15_000) / 1e6 + RTT
    assert not estimator.estimate(1.0 + expected / 2).stalled
    stuck = estimator.estimate(3.0)  # two seconds without a PUBACK: an outage
    assert stuck.stalled
    assert stuck.rate_bps == pytest.approx(wire_bytes(15_000) / (2.0 - RTT))
    assert stuck.oldest_in_flight_s == pytest.approx(2.0)
    # The PUBACK finally comes: the record is retired, the cap lifts.
    estimator.on_sample(15_000, 2.5, 3.5)
    assert not estimator.estimate(3.6).stalled
    assert estimator.in_flight() == 0


def test_rtt_prior_is_lowered_by_a_faster_sample():
    estimator = UplinkEstimator(rtt_s=0.100)
    estimator.on_sample(1000, 0.010, 1.0)
    assert estimator.rtt_s == pytest.approx(0.010)


def test_bad_samples_are_refused():
    with pytest.raises(EstimatorError):
        UplinkEstimator().on_sample(100, -1.0, 0.0)
    with pytest.raises(EstimatorError):
        UplinkEstimator(mode="median")


# -- probing ----------------------------------------------------------------------------------


def test_probe_only_when_the_uplink_has_been_quiet():
    estimator = UplinkEstimator(rtt_s=RTT)
    prober = Prober(size=8000, quiet_s=1.0, interval_s=1.0)
    assert prober.probe_bytes(estimator, 0.0) == 8000  # never measured: probe at once
    feed(estimator, 8000, 1e6, at=0.0)
    assert prober.probe_bytes(estimator, 0.5) == 0  # a fresh sample and a recent probe
    assert prober.probe_bytes(estimator, 1.5) == 8000


def test_no_second_probe_while_one_is_in_flight():
    estimator = UplinkEstimator(rtt_s=RTT)
    prober = Prober(size=8000, quiet_s=0.0, interval_s=0.0)
    assert prober.probe_bytes(estimator, 0.0) == 8000
    estimator.on_sent(8000, 0.0)
    assert prober.probe_bytes(estimator, 5.0) == 0


def test_probe_size_zero_never_probes():
    assert Prober(size=0).probe_bytes(UplinkEstimator(), 100.0) == 0


# -- server view ------------------------------------------------------------------------------


def test_fresh_telemetry_is_seen_and_stale_telemetry_ages_out():
    view = ServerView("m", stale_after_s=3.0)
    view.on_telemetry("w1", telemetry(queue_depth=7, service_ms={"m": {1: 2.5}}), now=10.0)
    [snapshot] = view.fresh(11.0)
    assert snapshot.queue_depth == 7
    assert snapshot.service_ms == {1: 2.5}
    assert snapshot.age_s == pytest.approx(1.0)
    assert snapshot.splits == frozenset({0, 1, 2})
    assert view.fresh(13.5) == []  # older than 3 intervals of 1 s


def test_a_worker_that_is_gone_is_dropped_at_once():
    view = ServerView("m")
    view.on_telemetry("w1", telemetry(), now=0.0)
    view.on_telemetry("w1", None, now=0.5)
    assert view.fresh(0.6) == []


def test_workers_that_do_not_serve_the_model_are_ignored():
    view = ServerView("m")
    view.on_telemetry("w2", telemetry("w2", models={"other": [0]}), now=0.0)
    assert view.fresh(0.1) == []


def test_slow_telemetry_interval_stretches_the_staleness_limit():
    view = ServerView("m", stale_after_s=3.0, stale_intervals=3.0)
    view.on_telemetry("w1", telemetry(interval_s=5.0), now=0.0)
    assert len(view.fresh(14.0)) == 1
    assert view.fresh(16.0) == []


# -- feedback and device times ----------------------------------------------------------------


def test_a_late_result_raises_the_expected_wait_until_fresh_telemetry():
    feedback = OffloadFeedback(min_excess_ms=25.0, bias=False)
    feedback.on_offload(10.0, 60.0)
    feedback.on_result(200.0, 10.2)  # 140 ms later than predicted: maybe a one-off
    assert feedback.penalty_ms(10.25, telemetry_at=9.5) == pytest.approx(70.0)
    feedback.on_offload(10.25, 60.0)
    feedback.on_result(200.0, 10.25 + 0.2)  # late again: the load has jumped
    assert feedback.penalty_ms(10.5, telemetry_at=9.5) == pytest.approx(140.0)
    assert feedback.penalty_ms(10.5, telemetry_at=10.46) == 0.0  # telemetry shows the load
    assert feedback.penalty_ms(13.0, telemetry_at=9.5) == 0.0  # held for 2 s at most


def test_bias_learns_how_late_offloads_finish_and_forgets_it():
    feedback = OffloadFeedback(bias_half_life_s=10.0, prior_weight=2.0, min_excess_ms=1e9)
    for i in range(20):
        start = i * 0.5
        feedback.on_offload(start, 60.0)
        feedback.on_result(70.0, start + 0.07)
    assert feedback.bias_ms(10.0) == pytest.approx(10.0 * 0.85, rel=0.1)
    assert feedback.bias_ms(100.0) < 1.0


def test_results_without_a_matching_offload_are_ignored():
    feedback = OffloadFeedback()
    feedback.on_result(500.0, 3.0)
    assert feedback.penalty_ms(3.1, None) == 0.0


def test_device_times_are_smoothed():
    times = DeviceTimes(weight=0.5)
    assert times.get(3) is None
    times.on_measured(3, 10.0)
    times.on_measured(3, 20.0)
    assert times.get(3) == pytest.approx(15.0)
    with pytest.raises(EstimatorError):
        times.on_measured(3, -1.0)


def test_the_estimator_learns_and_corrects_its_own_bias():
    """A link that alternates between 0.5 and 2 MB/s on every transfer: the decayed harmonic
    mean predicts 0.8 MB/s, the median transfer gets about 1 MB/s. The estimator measures its
    log errors against what each transfer achieved and shifts its prediction by their mean;
    their spread becomes the estimate's uncertainty."""
    estimator = UplinkEstimator(rtt_s=RTT, half_life_s=2.0, correct_bias=True)
    plain = UplinkEstimator(rtt_s=RTT, half_life_s=2.0)
    for i in range(200):
        rate = 2e6 if i % 2 else 0.5e6
        feed(estimator, 40_000, rate, at=i * 0.5)
        feed(plain, 40_000, rate, at=i * 0.5)
    biased = plain.estimate(100.0).rate_bps
    corrected = estimator.estimate(100.0).rate_bps
    assert biased is not None and corrected is not None
    assert biased == pytest.approx(0.8e6, rel=0.1)
    assert corrected == pytest.approx(1e6, rel=0.15)  # geometric mean of what transfers get
    assert estimator.errors.known and plain.errors.known
    assert plain.estimate(100.0).spread == pytest.approx(estimator.estimate(100.0).spread, rel=0.1)
    assert estimator.estimate(100.0).spread == pytest.approx(math.log(4) / 2, rel=0.15)


def test_errors_are_not_trusted_before_enough_bytes_were_predicted():
    estimator = UplinkEstimator(rtt_s=RTT)
    feed(estimator, 40_000, 1e6, at=0.0)
    feed(estimator, 40_000, 2e6, at=0.5)
    assert not estimator.errors.known
    assert estimator.errors.bias() == 0.0
