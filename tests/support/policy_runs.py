"""DynamicSplit driven through its protocol on a simulated clock: requests at 2 Hz, telemetry
every second, and an uplink over a trace whose PUBACKs reach the policy when they happen."""

from __future__ import annotations

import heapq

from schemas.messages import TelemetryMessage
from splitting.policy import DynamicSplit, SplitPolicy
from splitting.traces import Uplink, UplinkTrace, wire_bytes


def telemetry(now: float, **fields: object) -> TelemetryMessage:
    values: dict = {
        "worker_id": "w1",
        "ts": now,
        "seq": int(now),
        "interval_s": 1.0,
        "device": "cuda:0",
        "models": {"toy": [0, 1, 2, 3]},
        "queue_depth": 0,
        "queue_capacity": 64,
        "in_flight": 0,
        "batch_size": 1.0,
        "max_batch": 64,
        "utilization": 0.0,
        "service_ms": {"toy": {}},
        "served": 0,
        "rejected": 0,
        "expired": 0,
        "errors": 0,
    }
    values.update(fields)
    return TelemetryMessage(**values)


class Link:
    """The device's uplink over a trace; PUBACKs are delivered to the policy when they happen."""

    def __init__(self, trace: UplinkTrace) -> None:
        self.uplink = Uplink(trace, one_way_ms=20.0)
        self._acks: list[tuple[float, int, float]] = []

    def publish(self, policy: SplitPolicy, payload: int, now: float) -> None:
        handed = max(now, self.uplink.last_handed_s)
        delivery = self.uplink.send(wire_bytes(payload), handed)
        policy.on_uplink_sent(payload, handed)
        heapq.heappush(self._acks, (delivery.acked_s, payload, delivery.sample_s))

    def deliver(self, policy: SplitPolicy, now: float) -> None:
        while self._acks and self._acks[0][0] <= now:
            at, payload, seconds = heapq.heappop(self._acks)
            policy.on_uplink_sample(payload, seconds, at)


def run_device(policy: DynamicSplit, link: Link, start: float, stop: float) -> list[int]:
    """Requests at 2 Hz with telemetry every second; offloads and probes use the link."""
    chosen = []
    now = start
    while now < stop:
        link.deliver(policy, now)
        if abs(now - round(now)) < 1e-9:
            policy.on_telemetry("w1", telemetry(now), now)
        decision = policy.choose(now)
        chosen.append(decision.k)
        probe = policy.probe_bytes(now)
        if probe:
            link.publish(policy, probe, now)
        if decision.k < policy.device.n:
            link.publish(policy, policy.device.costs[decision.k].payload_bytes, now + 0.021)
        now = round(now + 0.5, 6)
    link.deliver(policy, stop)
    return chosen
