"""Latency model: device profile scaling, server estimate from telemetry, sums per split."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from splitting.errors import ProfileError
from splitting.estimators import LinkEstimate, ServerSnapshot
from splitting.latency import DeviceProfile, ServerEstimate, estimate_server, predict
from splitting.traces import wire_bytes
from tests.support.toy_model import toy_device, toy_model_profile, toy_server


def snapshot(**fields: object) -> ServerSnapshot:
    values: dict = {
        "worker_id": "w1",
        "queue_depth": 0,
        "in_flight": 0,
        "batch_size": 1.0,
        "max_batch": 64,
        "utilization": 0.0,
        "service_ms": {},
        "splits": frozenset({0, 1, 2, 3}),
        "age_s": 0.1,
    }
    values.update(fields)
    return ServerSnapshot(**values)


def test_device_profile_scales_device_work_but_not_server_decode():
    device = toy_device(slowdown=4.0)
    assert device.candidates == (0, 2, 4)
    assert device.local_ms == pytest.approx(160.0)
    assert device.costs[2].head_ms == pytest.approx(20.0)
    assert device.costs[2].encode_ms == pytest.approx(0.8)
    assert device.costs[2].decode_ms == pytest.approx(0.3)  # runs on the server
    assert device.costs[4].payload_bytes == 0
    assert device.local_tail_ms(2) == pytest.approx(140.0)


def test_device_profile_refuses_a_bad_slowdown():
    with pytest.raises(ProfileError, match="slowdown"):
        toy_device(slowdown=0.0)


def test_device_profile_round_trips_through_a_model_profile_file(tmp_path):
    path = tmp_path / "toy.json"
    toy_model_profile().save(path)
    assert DeviceProfile.load(path, slowdown=2.0).local_ms == pytest.approx(80.0)


def test_an_idle_worker_costs_the_profile_tail_at_batch_one():
    device = toy_device()
    estimate = estimate_server([snapshot()], device, toy_server())
    assert estimate is not None
    assert estimate.queue_ms[2] == 0.0
    assert estimate.service_ms[2] == pytest.approx(2.0)


def test_a_loaded_worker_makes_the_queue_wait_and_the_batch_slower():
    device = toy_device()
    busy = snapshot(queue_depth=640, batch_size=64.0, utilization=1.0, service_ms={0: 8.0})
    estimate = estimate_server([busy], device, toy_server())
    assert estimate is not None
    # 640 queued / 64 per batch * 8 ms per batch, plus half the batch in progress.
    assert estimate.queue_ms[0] == pytest.approx(10 * 8.0 + 4.0)
    assert estimate.service_ms[0] == pytest.approx(8.0)  # reported
    assert estimate.service_ms[2] == pytest.approx(4.0)  # the profile at batch 64


def test_without_load_awareness_the_server_is_taken_as_idle():
    device = toy_device()
    busy = snapshot(queue_depth=640, batch_size=64.0, utilization=1.0, service_ms={0: 8.0})
    estimate = estimate_server([busy], device, toy_server(), load_aware=False)
    assert estimate is not None
    assert estimate.queue_ms[0] == 0.0
    assert estimate.service_ms[0] == pytest.approx(4.0)


def test_requests_spread_over_workers_expect_the_mean():
    device = toy_device()
    idle = snapshot(worker_id="a")
    busy = snapshot(worker_id="b", queue_depth=64, batch_size=64.0, service_ms={0: 8.0})
    estimate = estimate_server([idle, busy], device, toy_server())
    assert estimate is not None
    assert estimate.queue_ms[0] == pytest.approx((0.0 + 8.0) / 2)


def test_with_direct_topics_the_device_expects_the_least_loaded_worker():
    """Workers that take requests on their own topic let the device pick the least loaded,
    so the chooser sees that worker's load, not the mean."""
    device = toy_device()
    idle = snapshot(worker_id="a", direct=True)
    busy = snapshot(
        worker_id="b", queue_depth=64, batch_size=64.0, service_ms={0: 8.0}, direct=True
    )
    estimate = estimate_server([idle, busy], device, toy_server())
    assert estimate is not None
    assert estimate.queue_ms[0] == 0.0
    one = estimate_server([idle, replace(busy, direct=False)], device, toy_server())
    assert one is not None and one.queue_ms[0] == pytest.approx(4.0)  # one direct: the mean


def test_no_worker_means_no_server_estimate():
    assert estimate_server([], toy_device(), toy_server()) is None


def test_prediction_sums_every_part():
    device = toy_device()
    link = LinkEstimate(rate_bps=1e6, rtt_s=0.040)
    server = ServerEstimate(queue_ms={2: 10.0}, service_ms={2: 2.0})
    parts = predict(2, device, link, server)
    assert parts.device_ms == pytest.approx(20.0 + 0.8)
    assert parts.uplink_ms == pytest.approx(wire_bytes(6_000) / 1e6 * 1000 + 20.0)
    assert parts.queue_ms == 10.0
    assert parts.server_ms == pytest.approx(2.0 + 0.3)
    assert parts.downlink_ms == pytest.approx(20.0)
    assert parts.total_ms == pytest.approx(
        parts.device_ms + parts.uplink_ms + parts.queue_ms + parts.server_ms + 20.0
    )


def test_backlog_ahead_on_the_uplink_delays_a_transfer():
    device = toy_device()
    server = ServerEstimate(queue_ms={2: 0.0}, service_ms={2: 2.0})
    idle = predict(2, device, LinkEstimate(rate_bps=1e6, rtt_s=0.04), server)
    queued = predict(
        2, device, LinkEstimate(rate_bps=1e6, rtt_s=0.04, backlog_bytes=50_000), server
    )
    assert queued.total_ms - idle.total_ms == pytest.approx(50.0)


def test_local_is_the_whole_model_on_the_device_whatever_else():
    device = toy_device()
    assert predict(4, device, None, None).total_ms == pytest.approx(160.0)
    assert predict(4, device, None, None, device_ms={4: 90.0}).total_ms == 90.0


def test_offload_is_impossible_without_link_server_or_served_split():
    device = toy_device()
    link = LinkEstimate(rate_bps=1e6, rtt_s=0.04)
    server = ServerEstimate(queue_ms={0: 0.0}, service_ms={0: 4.0})
    assert math.isinf(predict(0, device, None, server).total_ms)
    assert math.isinf(predict(0, device, link, None).total_ms)
    assert math.isinf(predict(2, device, link, server).total_ms)  # split 2 not served


def test_without_profile_a_tail_is_scaled_from_a_reported_split():
    device = toy_device()
    reported = snapshot(service_ms={2: 7.0})
    estimate = estimate_server([reported], device, None)
    assert estimate is not None
    assert estimate.service_ms[2] == 7.0
    # Blocks [0, 4) cost 160 ms on the device and [2, 4) 140 ms: split 0 takes 160/140 as long.
    assert estimate.service_ms[0] == pytest.approx(7.0 * 160 / 140)


def test_without_profile_or_report_the_worker_is_taken_as_fast_as_the_profiling_host():
    device = toy_device(slowdown=4.0)
    estimate = estimate_server([snapshot()], device, None)
    assert estimate is not None
    assert estimate.service_ms[0] == pytest.approx(160.0 / 4)
