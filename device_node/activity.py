"""A device's recent activity, aggregated from its records into a retained state message.

Dashboards and Home Assistant read `<prefix>/state/<device_id>`. It is published at most once
per `interval_s` (a request in between schedules one trailing publish), so its traffic does
not grow with the request rate.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from device_node.records import ResultRecord
from schemas.messages import (
    LATENCY_BUCKETS_MS,
    MAX_FALLBACK_REASONS,
    MAX_MILLIS,
    MAX_NAME,
    RECENT_REQUESTS,
    DeviceStateMessage,
    LastResult,
    LatencyHistogram,
    RecentRequest,
    encode_message,
)

DEFAULT_INTERVAL_S = 2.0


class DeviceActivity:
    """Counters, a latency histogram and the last requests of one device; thread-safe."""

    def __init__(
        self,
        device_id: str,
        model: str,
        *,
        publish: Callable[[bytes], None],
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.model = model
        self._publish = publish
        self._interval_s = interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._requests = 0
        self._offloaded = 0
        self._bytes_sent = 0
        self._fallbacks: Counter[str] = Counter()
        self._buckets = [0] * len(LATENCY_BUCKETS_MS)  # per bucket, not yet cumulative
        self._sum_ms = 0.0
        self._recent: deque[RecentRequest] = deque(maxlen=RECENT_REQUESTS)
        self._last: LastResult | None = None
        self._uplink_bps: float | None = None
        self._seq = 0
        self._published_at = float("-inf")
        self._trailing: threading.Timer | None = None

    def record(self, record: ResultRecord) -> None:
        """Count one finished request; publish if the interval has passed, else schedule."""
        total_ms = min(record.total_ms, MAX_MILLIS)
        predicted = record.predicted_ms
        predicted = min(predicted, MAX_MILLIS) if predicted is not None else None
        with self._lock:
            self._requests += 1
            self._offloaded += record.offloaded
            self._bytes_sent += record.bytes_sent
            fallback = record.fallback_label()
            if fallback is not None:
                self._count_fallback(fallback)
            index = bisect.bisect_left(LATENCY_BUCKETS_MS, total_ms)
            if index < len(self._buckets):
                self._buckets[index] += 1
            self._sum_ms += total_ms
            self._recent.append(
                RecentRequest(
                    split=record.split,
                    offloaded=record.offloaded,
                    fallback=fallback,
                    total_ms=total_ms,
                    predicted_ms=predicted,
                )
            )
            self._last = LastResult(
                label=record.top1.label[:MAX_NAME],
                index=record.top1.index,
                score=min(1.0, max(0.0, record.top1.score)),
                split=record.split,
                offloaded=record.offloaded,
                fallback=fallback,
                total_ms=total_ms,
                predicted_ms=predicted,
                worker_id=record.worker_id,
            )
            if record.uplink_bps is not None:
                self._uplink_bps = record.uplink_bps
        self._publish_or_schedule()

    def state(self) -> DeviceStateMessage:
        """The current state message (advances `seq`)."""
        with self._lock:
            self._seq += 1
            cumulative = []
            running = 0
            for count in self._buckets:
                running += count
                cumulative.append(running)
            return DeviceStateMessage(
                device_id=self.device_id,
                ts=self._wall_clock(),
                seq=self._seq,
                model=self.model,
                requests=self._requests,
                offloaded=self._offloaded,
                fallbacks=sum(self._fallbacks.values()),
                fallback_reasons=dict(self._fallbacks),
                bytes_sent=self._bytes_sent,
                offload_ratio=self._offloaded / self._requests if self._requests else 0.0,
                uplink_bps=self._uplink_bps,
                last=self._last,
                recent=list(self._recent),
                latency=LatencyHistogram(
                    le_ms=[float(b) for b in LATENCY_BUCKETS_MS],
                    counts=cumulative,
                    count=self._requests,
                    sum_ms=self._sum_ms,
                ),
            )

    def publish_now(self) -> None:
        with self._lock:
            self._published_at = self._clock()
            self._trailing = None
        self._publish(encode_message(self.state()))

    def close(self) -> None:
        """Cancel a scheduled publish (the caller publishes the final state itself)."""
        with self._lock:
            timer, self._trailing = self._trailing, None
        if timer is not None:
            timer.cancel()

    def _publish_or_schedule(self) -> None:
        with self._lock:
            wait_s = self._published_at + self._interval_s - self._clock()
            if wait_s > 0:
                if self._trailing is None:
                    self._trailing = threading.Timer(wait_s, self.publish_now)
                    self._trailing.daemon = True
                    self._trailing.start()
                return
        self.publish_now()

    def _count_fallback(self, fallback: str) -> None:
        # "error_reply:<code>" keeps its code; the number of distinct reasons stays bounded.
        reason = fallback[:64]
        if reason in self._fallbacks or len(self._fallbacks) < MAX_FALLBACK_REASONS - 1:
            self._fallbacks[reason] += 1
        else:
            self._fallbacks["other"] += 1
