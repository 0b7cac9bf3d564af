"""What a device knows of the workers: their retained telemetry and status, and who is alive.

Worker state comes from the retained telemetry (`<prefix>/telemetry/+`; an empty retained
payload means the worker shut down cleanly) and the retained status with its last will
(`<prefix>/status/+`). A worker is alive while its status is not "offline" and its latest
telemetry is younger than the staleness limit. The identity is the topic's, which the broker's
ACL can enforce; a payload naming another node is somebody speaking for it, and is ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import paho.mqtt.client as mqtt

from schemas.errors import SchemaError
from schemas.messages import TelemetryMessage, parse_status
from schemas.retained import read_telemetry
from schemas.topics import Topics

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Told of a worker's new telemetry, or None when it is gone (offline, or shut down cleanly).
TelemetryListener = Callable[[str, TelemetryMessage | None, float], None]


@dataclass(frozen=True)
class WorkerView:
    """What the device knows about one worker."""

    worker_id: str
    telemetry: TelemetryMessage | None = None
    telemetry_at: float | None = None  # monotonic receive time, minus the age of a retained one
    online: bool | None = None  # from the retained status; None: no status seen

    def age_s(self, now: float) -> float | None:
        return None if self.telemetry_at is None else now - self.telemetry_at

    def stale_after_s(self, configured: float | None) -> float:
        if configured is not None:
            return configured
        interval = self.telemetry.interval_s if self.telemetry is not None else 1.0
        return 3.0 * interval + 1.0

    def alive(self, now: float, stale_after_s: float | None) -> bool:
        age = self.age_s(now)
        return (
            self.online is not False
            and self.telemetry is not None
            and age is not None
            and age <= self.stale_after_s(stale_after_s)
        )

    def serves(self, model: str, k: int | None) -> bool:
        if self.telemetry is None:
            return False
        splits = self.telemetry.models.get(model, [])
        return bool(splits) if k is None else k in splits


def expected_wait_ms(telemetry: TelemetryMessage, model: str, split: int) -> float:
    """What a request sent now would wait at this worker: the requests ahead of it (queued and
    computing), each at the worker's recent per-request tail time for this split (1 ms when it
    reported none yet, so an idle worker still beats a busy one)."""
    per_batch = telemetry.service_ms.get(model, {}).get(split)
    per_request = per_batch / max(1.0, telemetry.batch_size) if per_batch else 1.0
    return (telemetry.queue_depth + telemetry.in_flight) * per_request


def least_loaded(views: list[WorkerView], model: str, split: int) -> str | None:
    """Of workers known alive, the one with the least `expected_wait_ms`; None unless at least
    two take direct requests and one of them waits less than another."""
    direct = [v for v in views if v.telemetry is not None and v.telemetry.direct]
    if len(direct) < 2:
        return None
    waits = {
        v.worker_id: expected_wait_ms(v.telemetry, model, split)
        for v in direct
        if v.telemetry is not None
    }
    best = min(sorted(waits), key=lambda worker_id: waits[worker_id])
    return best if waits[best] < max(waits.values()) else None


class WorkerDirectory:
    """The latest view of every worker; fed by the link's routes, read by anyone; thread-safe.

    `on_gone(now)` runs after a worker went away, so the link can fail waits that no live
    worker will answer.
    """

    def __init__(
        self,
        topics: Topics,
        *,
        stale_after_s: float | None,
        listener: TelemetryListener,
        on_gone: Callable[[float], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self.topics = topics
        self.stale_after_s = stale_after_s
        self._listener = listener
        self._on_gone = on_gone
        self._clock = clock
        self._changed = threading.Condition()
        self._workers: dict[str, WorkerView] = {}

    def alive(self, model: str, split: int | None, now: float | None = None) -> list[str]:
        """Workers alive now that serve `split` of `model` (None: any split of it)."""
        now = self._clock() if now is None else now
        with self._changed:
            return sorted(
                view.worker_id
                for view in self._workers.values()
                if view.alive(now, self.stale_after_s) and view.serves(model, split)
            )

    def snapshot(self) -> dict[str, WorkerView]:
        with self._changed:
            return dict(self._workers)

    def least_loaded(self, model: str, split: int, now: float | None = None) -> str | None:
        """The live worker of `split` with the least expected wait, when several take direct
        requests and their loads differ; None: send to the shared topic (one worker, none, or
        all alike, where the broker's sharing does as well)."""
        now = self._clock() if now is None else now
        alive = set(self.alive(model, split, now))
        with self._changed:
            views = [v for v in self._workers.values() if v.worker_id in alive]
        return least_loaded(views, model, split)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds; evaluated again whenever telemetry or status comes."""
        with self._changed:
            return self._changed.wait_for(condition, timeout_s)

    # -- routes (network thread) -------------------------------------------------------------

    def on_telemetry(self, message: mqtt.MQTTMessage) -> None:
        now = self._clock()
        try:
            worker_id, telemetry = read_telemetry(self.topics, message.topic, message.payload)
        except SchemaError as exc:
            logger.warning("bad telemetry on %s: %s", message.topic, exc)
            return
        received_at = now
        if telemetry is not None and message.retain:
            # A retained message may be old: date it by its own timestamp.
            received_at = now - max(0.0, time.time() - telemetry.ts)
        at = received_at if telemetry is not None else None
        self._update(worker_id, lambda view: replace(view, telemetry=telemetry, telemetry_at=at))
        self._listener(worker_id, telemetry, now)
        if telemetry is None:
            self._on_gone(now)

    def on_status(self, message: mqtt.MQTTMessage) -> None:
        now = self._clock()
        if not message.payload:
            return
        try:
            node_id = self.topics.parse_status(message.topic)
            status = parse_status(message.payload)
        except SchemaError:
            return
        if status.role != "worker" or status.node_id != node_id:
            return
        online = status.state == "online"
        self._update(node_id, lambda view: replace(view, online=online))
        if status.state == "offline":
            self._listener(node_id, None, now)
            self._on_gone(now)

    def _update(self, worker_id: str, change: Callable[[WorkerView], WorkerView]) -> None:
        """Replace the worker's view by `change(view)` (typed: telemetry stays a message)."""
        with self._changed:
            view = self._workers.get(worker_id, WorkerView(worker_id))
            self._workers[worker_id] = change(view)
            self._changed.notify_all()
