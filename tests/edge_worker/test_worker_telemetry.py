"""Per-split telemetry like an inference server's: counts, times (cumulative and recent),
pending, rejected, expired and utilization; old telemetry still parses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_worker.telemetry import TelemetryReporter, WorkerStats
from schemas.generate import schema_of
from schemas.messages import SplitLoad, TelemetryMessage, encode_message, parse_telemetry


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_split_has_its_own_counts_and_times() -> None:
    clock = FakeClock()
    stats = WorkerStats(window_s=1.0, clock=clock)
    stats.record_compute("m", 3, batch_size=4, compute_ms=100.0, queue_ms=40.0)
    stats.count("served", 4, key=("m", 3))
    stats.record_compute("m", 3, batch_size=2, compute_ms=300.0, queue_ms=20.0)
    stats.count("served", 2, key=("m", 3))
    stats.record_compute("m", 9, batch_size=1, compute_ms=50.0, queue_ms=5.0)
    stats.count("served", key=("m", 9))
    stats.count("rejected", 2, key=("m", 9))
    stats.count("expired", key=("m", 3))
    snapshot = stats.snapshot({("m", 9): 5})
    three, nine = snapshot.splits["m"][3], snapshot.splits["m"][9]
    assert (three.served, three.batches, three.mean_batch) == (6, 2, 3.0)
    assert (three.queue_ms_total, three.compute_ms_total) == (60.0, 400.0)
    assert three.queue_ms_recent == pytest.approx(10.0)  # 60 ms over 6 requests
    assert three.compute_ms_recent == pytest.approx(200.0)  # per batch
    assert three.utilization == pytest.approx(0.4)  # 400 ms of the last second
    assert (three.expired, three.rejected, three.pending) == (1, 0, 0)
    assert (nine.served, nine.rejected, nine.pending, nine.utilization) == (1, 2, 5, 0.05)
    assert (snapshot.batches, snapshot.compute_ms_total, snapshot.queue_ms_total) == (3, 450, 65)
    assert snapshot.queue_ms_recent == pytest.approx(65 / 7)
    assert snapshot.compute_ms_recent == pytest.approx(150.0)
    clock.now += 1.5  # past the window: recent figures fall to 0, cumulative ones stay
    later = stats.snapshot().splits["m"][3]
    assert (later.queue_ms_recent, later.compute_ms_recent, later.utilization) == (0, 0, 0)
    assert (later.served, later.compute_ms_total) == (6, 400.0)


def test_a_split_with_only_waiting_requests_is_reported() -> None:
    stats = WorkerStats(window_s=1.0)
    load = stats.snapshot({("m", 2): 3}).splits["m"][2]
    assert load == SplitLoad(
        served=0, batches=0, mean_batch=0, queue_ms_total=0, compute_ms_total=0,
        queue_ms_recent=0, compute_ms_recent=0, pending=3, rejected=0, expired=0, utilization=0,
    )  # fmt: skip


def test_telemetry_carries_the_split_loads_and_round_trips() -> None:
    stats = WorkerStats(window_s=1.0)
    stats.record_compute("m", 3, batch_size=2, compute_ms=10.0, queue_ms=1.0)
    stats.count("served", 2, key=("m", 3))
    published: list[bytes] = []
    reporter = TelemetryReporter(
        stats,
        worker_id="w",
        device="cpu",
        models={"m": [3]},
        queue_capacity=16,
        max_batch=4,
        interval_s=1.0,
        min_gap_s=0.0,
        queue_depth=lambda: 1,
        publish=published.append,
        pending=lambda: {("m", 3): 1},
    )
    message = reporter.publish_now()
    assert parse_telemetry(published[0]) == message
    assert json.loads(published[0])["splits"]["m"]["3"]["pending"] == 1
    assert message.splits["m"][3].served == 2 and message.batches == 1


def test_telemetry_of_an_older_worker_still_parses() -> None:
    current = TelemetryMessage(
        worker_id="w", ts=1.0, seq=1, interval_s=1.0, device="cpu", models={"m": [3]},
        queue_depth=0, queue_capacity=8, in_flight=0, batch_size=1.0, max_batch=8,
        utilization=0.0, service_ms={}, served=0, rejected=0, expired=0, errors=0,
    )  # fmt: skip
    old = json.loads(encode_message(current))
    for key in ("throughput_rps", "batches", "queue_ms_total", "compute_ms_total"):
        old.pop(key)
    for key in ("queue_ms_recent", "compute_ms_recent", "splits"):
        old.pop(key)
    parsed = parse_telemetry(json.dumps(old))
    assert parsed.splits == {} and parsed.batches == 0 and parsed == current


def test_every_telemetry_field_is_documented_in_the_json_schema() -> None:
    schema: dict[str, Any] = json.loads(json.dumps(schema_of(TelemetryMessage)))
    objects = {"TelemetryMessage": schema, "SplitLoad": schema["$defs"]["SplitLoad"]}
    undocumented = [
        f"{name}.{field}"
        for name, obj in objects.items()
        for field, spec in obj["properties"].items()
        if not spec.get("description")
    ]
    assert undocumented == []
