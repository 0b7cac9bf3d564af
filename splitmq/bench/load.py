"""The one load generator of the benchmarks: light devices publish request frames, paced or in a
burst, and every reply is collected by request id.

The fleet benchmark paces many devices at a rate each; the worker benchmark fires bursts from
one device per worker. Both read their figures from the same `Tally`: the first reply of each
request, when it was sent, and how many replies came twice.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.messages import ServerTimings
from splitmq.bench.light_device import LightDevice, Reply
from splitmq.reports import LatencyStats


@dataclass(frozen=True)
class Pace:
    """Each device sends at `rate_hz`, from a random phase (seeded), for `duration_s`."""

    rate_hz: float
    duration_s: float
    seed: int = 0
    expiry_s: int = 60


@dataclass(frozen=True)
class Tally:
    """What came back for a set of requests."""

    request_ids: tuple[str, ...]
    replies: dict[str, Reply]  # the first reply of each answered request
    sent_at: dict[str, float]  # time.perf_counter() at the publish
    duplicates: int

    @property
    def sent(self) -> int:
        return len(self.request_ids)

    @property
    def lost(self) -> int:
        """Requests without any reply."""
        return self.sent - len(self.replies)

    def statuses(self) -> dict[str, int]:
        """Replies by status; an unparseable reply counts as "unparseable"."""
        counts: dict[str, int] = {}
        for reply in self.replies.values():
            status = reply.message.status if reply.message else "unparseable"
            counts[status] = counts.get(status, 0) + 1
        return counts

    def ok(self) -> dict[str, Reply]:
        """The answered requests' replies ("ok")."""
        return {
            rid: r
            for rid, r in self.replies.items()
            if r.message is not None and r.message.status == "ok"
        }

    def latencies_ms(self) -> list[float]:
        """Publish to reply of every answered request."""
        return [(r.received_at - self.sent_at[rid]) * 1000.0 for rid, r in self.ok().items()]

    def timings(self) -> list[ServerTimings]:
        """The worker's timings of every answered request that reported them."""
        return [r.message.timings for r in self.ok().values() if r.message and r.message.timings]


class LoadGenerator:
    """Publishes requests from light devices and keeps every reply (thread-safe).

    Devices report to it by `LightDevice(..., on_reply=load.on_reply)`.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._sent_at: dict[str, float] = {}
        self._first: dict[str, Reply] = {}
        self._duplicates = 0

    def on_reply(self, device: LightDevice, request_id: str, reply: Reply) -> None:
        with self._lock:
            if request_id in self._first:
                self._duplicates += 1
            else:
                self._first[request_id] = reply
            self._lock.notify_all()

    def send(
        self, device: LightDevice, topic: str, frame: bytes, request_id: str, *, expiry_s: int
    ) -> None:
        """Publish one request, noting when."""
        with self._lock:
            self._sent_at[request_id] = time.perf_counter()
        device.send(topic, frame, request_id, expiry_s=expiry_s)

    def burst(
        self,
        device: LightDevice,
        topic: str,
        frames: Sequence[tuple[str, bytes]],
        *,
        expiry_s: int = 60,
    ) -> float:
        """Publish every (request id, frame) back to back; returns when the burst started."""
        started = time.perf_counter()
        for request_id, frame in frames:
            self.send(device, topic, frame, request_id, expiry_s=expiry_s)
        return started

    def paced(
        self,
        devices: Sequence[LightDevice],
        topic_of: Callable[[LightDevice], str],
        frames: Sequence[bytes],
        pace: Pace,
    ) -> tuple[list[str], LatencyStats]:
        """Each device sends frames (in turn from `frames`) at `pace`; returns the request ids
        sent and how late the sends were against their planned times (ms)."""
        rng = random.Random(pace.seed)
        period = 1.0 / pace.rate_hz
        start = time.perf_counter() + 0.1
        end = start + pace.duration_s
        queue = [(start + rng.random() * period, d) for d in range(len(devices))]
        heapq.heapify(queue)
        counts = [0] * len(devices)
        lags: list[float] = []
        sent: list[str] = []
        while queue:
            due, d = heapq.heappop(queue)
            if due >= end:
                continue
            lags.append(_sleep_until(due))
            device = devices[d]
            request_id = f"{device.device_id}-{counts[d]}"
            counts[d] += 1
            frame = frames[len(sent) % len(frames)]
            self.send(device, topic_of(device), frame, request_id, expiry_s=pace.expiry_s)
            sent.append(request_id)
            heapq.heappush(queue, (due + period, d))
        return sent, LatencyStats.of(lags)

    def wait(self, request_ids: Sequence[str], timeout_s: float) -> bool:
        """Wait until every one of `request_ids` has a reply; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: all(rid in self._first for rid in request_ids), timeout_s
            )

    def tally(self, request_ids: Sequence[str]) -> Tally:
        """What came back for `request_ids` so far."""
        with self._lock:
            return Tally(
                request_ids=tuple(request_ids),
                replies={rid: self._first[rid] for rid in request_ids if rid in self._first},
                sent_at={rid: self._sent_at[rid] for rid in request_ids if rid in self._sent_at},
                duplicates=self._duplicates,
            )


def _sleep_until(due: float) -> float:
    """Sleep until perf_counter() reaches `due`; how late it woke, in ms."""
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    return (time.perf_counter() - due) * 1000.0
