"""Split policies: what the device node asks before each request.

A policy turns what the device has observed (uplink samples, telemetry, worker status) into a
`Decision`. The device node, the trace simulator and the tests drive the same policy objects;
time is always passed in (`now`, seconds on a monotonic clock), never read inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    """The split chosen for one request.

    `k` is the split index (0 = send the input, n = run everything locally). `predicted_ms`
    holds the latency model's estimate per considered split (empty for fixed policies).
    """

    k: int
    reason: str
    predicted_ms: dict[int, float] = field(default_factory=dict)

    @property
    def expected_ms(self) -> float | None:
        return self.predicted_ms.get(self.k)


class SplitPolicy(Protocol):
    """What the device node needs from a policy. Observers default to no-ops in FixedSplit."""

    def choose(self, now: float) -> Decision:
        """Pick the split for a request that starts now."""
        ...

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        """A publish of `nbytes` (request frame or probe payload) was handed to the client now.

        Paired in order with `on_uplink_sample`: lets the policy notice a transmission that is
        taking far longer than expected (an outage) before its PUBACK arrives."""
        ...

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        """A publish of `nbytes` took `seconds` from hand-over to the broker's PUBACK."""
        ...

    def on_device_time(self, k: int, ms: float, now: float) -> None:
        """The device measured `ms` for head(k) plus encoding (k = n: the whole model)."""
        ...

    def on_telemetry(self, worker_id: str, telemetry: object | None, now: float) -> None:
        """Latest telemetry of a worker (a schemas.messages.TelemetryMessage), None when gone."""
        ...

    def on_result(self, k: int, offloaded: bool, latency_ms: float, now: float) -> None:
        """A request finished (offloaded or run locally) after `latency_ms`."""
        ...

    def probe_bytes(self, now: float) -> int:
        """Bytes to send as an uplink probe now (0: no probe). Lets a local-only policy
        keep measuring the uplink."""
        ...

    def deadline_ms(self, decision: Decision) -> float | None:
        """How long after the request started (the `choose` call) the device waits for the
        server's result before it runs tail(k) locally; None: the device node's own default."""
        ...


class FixedSplit:
    """Always the same split (a baseline, and the runtime's simplest policy)."""

    def __init__(self, k: int, *, deadline_ms: float | None = None) -> None:
        if k < 0:
            raise ValueError(f"split index must be >= 0, got {k}")
        if deadline_ms is not None and deadline_ms <= 0:
            raise ValueError(f"deadline must be > 0 ms, got {deadline_ms}")
        self.k = k
        self._deadline_ms = deadline_ms

    def choose(self, now: float) -> Decision:
        return Decision(k=self.k, reason="fixed")

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        return None

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        return None

    def on_device_time(self, k: int, ms: float, now: float) -> None:
        return None

    def on_telemetry(self, worker_id: str, telemetry: object | None, now: float) -> None:
        return None

    def on_result(self, k: int, offloaded: bool, latency_ms: float, now: float) -> None:
        return None

    def probe_bytes(self, now: float) -> int:
        return 0

    def deadline_ms(self, decision: Decision) -> float | None:
        return self._deadline_ms
