"""A device's retained state: counts, a cumulative histogram, and a bounded publish rate."""

from __future__ import annotations

import json
import threading

from device_node.activity import DeviceActivity
from device_node.records import Fallback, LatencyParts, PredictionRecord, ResultRecord
from schemas.messages import RECENT_REQUESTS, parse_device_state


def record(
    total_ms: float, *, offloaded: bool = True, fallback: Fallback | None = None, detail: str = ""
) -> ResultRecord:
    top = PredictionRecord(index=7, label="cock", score=0.9)
    return ResultRecord(
        request_id="r", device_id="d1", image="i", split=5 if offloaded else 16,
        offloaded=offloaded, fallback=fallback, bytes_sent=100 if offloaded else 0,
        latency=LatencyParts(), total_ms=total_ms, top1=top, top5=(top,), predicted_ms=40.0,
        uplink_bps=8e6, fallback_detail=detail,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_state_counts_outcomes_and_keeps_a_cumulative_histogram() -> None:
    published: list[bytes] = []
    activity = DeviceActivity("d1", "m", publish=published.append, interval_s=0.0)
    for ms in (5, 30, 30, 80, 9000):
        activity.record(record(ms))
    activity.record(record(60, offloaded=False, fallback=Fallback.TIMEOUT))
    state = parse_device_state(published[-1])
    assert (state.requests, state.offloaded, state.fallbacks) == (6, 5, 1)
    assert state.fallback_reasons == {"timeout": 1}
    assert state.bytes_sent == 500 and state.offload_ratio == 5 / 6
    counts = dict(zip(state.latency.le_ms, state.latency.counts, strict=True))
    assert counts[10] == 1 and counts[50] == 3 and counts[75] == 4 and counts[5000] == 5
    assert state.latency.count == 6  # the 9 s request only in +Inf
    assert state.last is not None and state.last.fallback == "timeout"
    assert state.uplink_bps == 8e6


def test_an_error_reply_is_counted_and_shown_with_its_code() -> None:
    published: list[bytes] = []
    activity = DeviceActivity("d1", "m", publish=published.append, interval_s=0.0)
    activity.record(record(60, offloaded=False, fallback=Fallback.ERROR_REPLY, detail="bad_frame"))
    activity.record(record(70, offloaded=False, fallback=Fallback.REJECTED, detail="queue_full"))
    state = parse_device_state(published[-1])
    assert state.fallback_reasons == {"error_reply:bad_frame": 1, "rejected": 1}
    assert [r.fallback for r in state.recent] == ["error_reply:bad_frame", "rejected"]


def test_a_records_json_holds_the_reason_as_a_string_and_the_detail_beside_it() -> None:
    failed = record(60, offloaded=False, fallback=Fallback.ERROR_REPLY, detail="bad_frame")
    data = json.loads(json.dumps(failed.to_dict()))
    assert (data["fallback"], data["fallback_detail"]) == ("error_reply", "bad_frame")
    assert list(data).index("fallback_detail") == list(data).index("fallback") + 1
    assert type(failed.to_dict()["fallback"]) is str
    served = record(30).to_dict()
    assert (served["fallback"], served["fallback_detail"]) == (None, "")


def test_publishes_at_most_once_per_interval_then_once_more_for_the_rest() -> None:
    clock = Clock()
    published: list[bytes] = []
    sent = threading.Event()

    def publish(payload: bytes) -> None:
        published.append(payload)
        sent.set()

    activity = DeviceActivity("d1", "m", publish=publish, interval_s=0.2, clock=clock)
    activity.record(record(10))  # first: at once
    sent.clear()
    for _ in range(50):
        activity.record(record(10))  # within the interval: one trailing publish scheduled
    assert len(published) == 1
    clock.now = 1.0
    assert sent.wait(5), "the trailing publish never came"
    assert len(published) == 2
    final = parse_device_state(published[-1])
    assert final.requests == 51 and len(final.recent) == RECENT_REQUESTS
