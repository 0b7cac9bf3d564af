"""The benchmarks' one load generator, without a broker: what it sends and how it tallies."""

from __future__ import annotations

from typing import Any, cast

from schemas.messages import ResultMessage, ServerTimings
from splitmq.bench.light_device import LightDevice, Reply
from splitmq.bench.load import LoadGenerator, Pace


class FakeDevice:
    """Records what would be published instead of publishing it."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.sent: list[tuple[str, bytes, str]] = []

    def send(self, topic: str, frame: bytes, request_id: str, **kwargs: Any) -> None:
        self.sent.append((topic, frame, request_id))


def reply(request_id: str, status: str, at: float, batch: int = 1) -> Reply:
    timings = ServerTimings(queue_ms=0.0, decode_ms=0.0, compute_ms=1.0, batch_size=batch)
    message = ResultMessage(
        request_id=request_id,
        status=status,
        model="echo",
        split=0,
        worker_id="w",
        timings=timings if status == "ok" else None,
    )
    return Reply(message, at)


def test_paced_devices_send_at_their_rate_in_turn_from_the_frames() -> None:
    load = LoadGenerator()
    fakes = [FakeDevice("a"), FakeDevice("b")]
    devices = cast(list[LightDevice], fakes)
    sent, lag = load.paced(devices, lambda d: f"req/{d.device_id}", [b"x", b"y"], Pace(20, 0.5))
    assert len(sent) == 2 * 10
    assert {rid.split("-")[0] for rid in sent} == {"a", "b"}
    assert all(topic == f"req/{f.device_id}" for f in fakes for topic, _, _ in f.sent)
    assert sorted(frame for f in fakes for _, frame, _ in f.sent) == [b"x"] * 10 + [b"y"] * 10
    assert lag.count == len(sent)


def test_the_tally_counts_statuses_duplicates_and_the_lost() -> None:
    load = LoadGenerator()
    device = cast(LightDevice, FakeDevice("d"))
    started = load.burst(device, "req", [(f"r{i}", b"f") for i in range(4)])
    load.on_reply(device, "r0", reply("r0", "ok", started + 0.010, batch=2))
    load.on_reply(device, "r0", reply("r0", "ok", started + 0.020))
    load.on_reply(device, "r1", reply("r1", "rejected", started + 0.005))
    load.on_reply(device, "r2", Reply(None, started + 0.005))
    assert not load.wait(["r0", "r1", "r2", "r3"], 0.01)
    tally = load.tally(["r0", "r1", "r2", "r3"])
    assert tally.sent == 4 and tally.lost == 1 and tally.duplicates == 1
    assert tally.statuses() == {"ok": 1, "rejected": 1, "unparseable": 1}
    assert [t.batch_size for t in tally.timings()] == [2]
    (latency,) = tally.latencies_ms()
    assert 0 < latency <= 10.0 + 1e-6
