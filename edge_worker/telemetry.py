"""Worker load statistics and the retained telemetry they become.

`WorkerStats` is updated by the compute thread (batches, outcomes) and read by the telemetry
thread; `TelemetryReporter` publishes a `schemas.messages.TelemetryMessage` every interval and,
rate-limited, whenever the load changes noticeably (queue depth moved by an eighth of the
capacity, a split got its first service time, a request was rejected), so a device's chooser
sees a burst without waiting a whole interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from edge_worker.batching import BatchKey
from edge_worker.errors import WorkerStateError
from schemas.messages import MAX_MILLIS, SplitLoad, TelemetryMessage, encode_message
from splitting.estimators import ewma

LOG = logging.getLogger(__name__)
Outcome = Literal["served", "rejected", "expired", "errors"]
EWMA_ALPHA = 0.2  # weight of the newest sample: about the last 10 batches matter
#: A split's advertised service time is withdrawn when its last tail call is older than this:
#: the devices then fall back to the profile, rather than trusting a figure from another load.
SERVICE_MAX_AGE_S = 60.0


@dataclass
class _SplitCounters:
    """Cumulative figures of one (model, split)."""

    served: int = 0
    batches: int = 0
    batched_requests: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    rejected: int = 0
    expired: int = 0


@dataclass(frozen=True)
class _Batch:
    """One finished tail call, kept for the recent window."""

    at: float
    key: BatchKey
    size: int
    queue_ms: float  # summed over its requests
    compute_ms: float


@dataclass(frozen=True)
class StatsSnapshot:
    in_flight: int
    batch_size: float
    utilization: float
    service_ms: dict[str, dict[int, float]]
    served: int
    rejected: int
    expired: int
    errors: int
    throughput_rps: float = 0.0
    batches: int = 0
    queue_ms_total: float = 0.0
    compute_ms_total: float = 0.0
    queue_ms_recent: float = 0.0
    compute_ms_recent: float = 0.0
    splits: dict[str, dict[int, SplitLoad]] = field(default_factory=dict)


class WorkerStats:
    """Counters and moving averages of one worker; thread-safe."""

    def __init__(
        self,
        *,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        service_max_age_s: float = SERVICE_MAX_AGE_S,
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._service_max_age_s = service_max_age_s
        self._lock = threading.Lock()
        self._counts: dict[Outcome, int] = {"served": 0, "rejected": 0, "expired": 0, "errors": 0}
        self._service_ms: dict[str, dict[int, tuple[float, float]]] = {}  # (EWMA ms, when)
        self._shapes_seen: set[tuple[str, int, int, bool]] = set()
        self._batch_size: float | None = None
        self._in_flight = 0
        self._busy_since: float | None = None
        self._busy: deque[tuple[float, float]] = deque()  # finished busy periods (start, end)
        self._served: deque[tuple[float, int]] = deque()  # (time, requests served then)
        self._splits: dict[BatchKey, _SplitCounters] = {}
        self._recent: deque[_Batch] = deque()

    def count(self, outcome: Outcome, n: int = 1, *, key: BatchKey | None = None) -> None:
        """`n` requests ended so; `key` (model, split) also counts them for that split."""
        with self._lock:
            self._counts[outcome] += n
            if outcome == "served":
                self._served.append((self._clock(), n))
            if key is not None and outcome in ("served", "rejected", "expired"):
                counters = self._splits.setdefault(key, _SplitCounters())
                setattr(counters, outcome, getattr(counters, outcome) + n)

    def batch_started(self, size: int) -> None:
        with self._lock:
            self._in_flight = size
            self._busy_since = self._clock()

    def batch_finished(self) -> None:
        with self._lock:
            now = self._clock()
            if self._busy_since is not None:
                self._busy.append((self._busy_since, now))
            self._busy_since = None
            self._in_flight = 0
            self._prune(now)

    def record_compute(
        self,
        model: str,
        split: int,
        batch_size: int,
        compute_ms: float,
        queue_ms: float = 0.0,
        *,
        exact_path: bool = False,
    ) -> None:
        """One tail call: its time (per batch) and size feed the EWMAs, the split's cumulative
        figures and the recent window; `queue_ms` is its requests' queue times summed.

        The first call of a (split, batch size, path) is cold (kernel and allocator setup,
        measured at up to 1.7 s on CPU): it is counted, but not advertised as the service
        time, which describes the worker's steady state."""
        with self._lock:
            shape = (model, split, batch_size, exact_path)
            if shape in self._shapes_seen:
                per_model = self._service_ms.setdefault(model, {})
                previous = per_model.get(split)
                smoothed = ewma(previous[0] if previous else None, compute_ms, EWMA_ALPHA)
                per_model[split] = (smoothed, self._clock())
            self._shapes_seen.add(shape)
            self._batch_size = ewma(self._batch_size, float(batch_size), EWMA_ALPHA)
            counters = self._splits.setdefault((model, split), _SplitCounters())
            counters.batches += 1
            counters.batched_requests += batch_size
            counters.queue_ms += queue_ms
            counters.compute_ms += compute_ms
            self._recent.append(
                _Batch(self._clock(), (model, split), batch_size, queue_ms, compute_ms)
            )

    def snapshot(self, pending: Mapping[BatchKey, int] | None = None) -> StatsSnapshot:
        """The figures now; `pending` (the queue's waiting requests per split) fills each
        split's `pending`."""
        pending = pending or {}
        with self._lock:
            now = self._clock()
            self._prune(now)
            recent = list(self._recent)
            totals = list(self._splits.values())
            splits: dict[str, dict[int, SplitLoad]] = {}
            for key in sorted({*self._splits, *pending}):
                counters = self._splits.get(key, _SplitCounters())
                mine = [b for b in recent if b.key == key]
                splits.setdefault(key[0], {})[key[1]] = self._split_load(
                    counters, mine, pending.get(key, 0)
                )
            return StatsSnapshot(
                in_flight=self._in_flight,
                batch_size=self._batch_size or 0.0,
                utilization=self._utilization(now),
                service_ms=self._fresh_service_ms(now),
                **self._counts,
                throughput_rps=sum(n for _, n in self._served) / self._window_s,
                batches=sum(c.batches for c in totals),
                queue_ms_total=sum(c.queue_ms for c in totals),
                compute_ms_total=sum(c.compute_ms for c in totals),
                queue_ms_recent=_mean_queue(recent),
                compute_ms_recent=_mean_compute(recent),
                splits=splits,
            )

    def mark_warm(self, model: str, split: int, batch_size: int, exact_path: bool) -> None:
        """A warm-up call of this shape ran: the next real call is not cold."""
        with self._lock:
            self._shapes_seen.add((model, split, batch_size, exact_path))

    def _fresh_service_ms(self, now: float) -> dict[str, dict[int, float]]:
        fresh: dict[str, dict[int, float]] = {}
        for model, splits in self._service_ms.items():
            for split, (ms, at) in splits.items():
                if now - at <= self._service_max_age_s:
                    fresh.setdefault(model, {})[split] = ms
        return fresh

    def _split_load(
        self, counters: _SplitCounters, recent: list[_Batch], pending: int
    ) -> SplitLoad:
        busy_ms = sum(b.compute_ms for b in recent)
        return SplitLoad(
            served=counters.served,
            batches=counters.batches,
            mean_batch=counters.batched_requests / counters.batches if counters.batches else 0.0,
            queue_ms_total=counters.queue_ms,
            compute_ms_total=counters.compute_ms,
            queue_ms_recent=_mean_queue(recent),
            compute_ms_recent=_mean_compute(recent),
            pending=pending,
            rejected=counters.rejected,
            expired=counters.expired,
            utilization=min(1.0, busy_ms / 1000.0 / self._window_s),
        )

    def _utilization(self, now: float) -> float:
        """Busy fraction of the last `window_s` seconds, the running batch included."""
        start = now - self._window_s
        busy = sum(min(end, now) - max(begin, start) for begin, end in self._busy if end > start)
        if self._busy_since is not None:
            busy += now - max(self._busy_since, start)
        return min(1.0, max(0.0, busy / self._window_s))

    def _prune(self, now: float) -> None:
        while self._busy and self._busy[0][1] < now - self._window_s:
            self._busy.popleft()
        while self._served and self._served[0][0] < now - self._window_s:
            self._served.popleft()
        while self._recent and self._recent[0].at < now - self._window_s:
            self._recent.popleft()


def _mean_queue(batches: list[_Batch]) -> float:
    requests = sum(b.size for b in batches)
    return min(MAX_MILLIS, sum(b.queue_ms for b in batches) / requests) if requests else 0.0


def _mean_compute(batches: list[_Batch]) -> float:
    return min(MAX_MILLIS, sum(b.compute_ms for b in batches) / len(batches)) if batches else 0.0


class TelemetryReporter:
    """Publishes retained telemetry on a thread: periodically and on significant change."""

    def __init__(
        self,
        stats: WorkerStats,
        *,
        worker_id: str,
        device: str,
        models: Mapping[str, Sequence[int]],
        queue_capacity: int,
        max_batch: int,
        interval_s: float,
        min_gap_s: float,
        queue_depth: Callable[[], int],
        publish: Callable[[bytes], None],
        pending: Callable[[], Mapping[BatchKey, int]] = dict,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._worker_id = worker_id
        self._device = device
        self._models = {model: list(splits) for model, splits in models.items()}
        self._queue_capacity = queue_capacity
        self._max_batch = max_batch
        self._interval_s = interval_s
        self._min_gap_s = min_gap_s
        self._queue_depth = queue_depth
        self._pending = pending
        self._publish = publish
        self._wall_clock = wall_clock
        self._clock = clock
        self._seq = 0
        self._last: TelemetryMessage | None = None
        self._last_at = float("-inf")
        self._checked_at = float("-inf")  # the last on-change look, published or not
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def depth_step(self) -> int:
        """Queue-depth change that counts as significant."""
        return max(1, self._queue_capacity // 8)

    def build(self) -> TelemetryMessage:
        """The current telemetry message (advances `seq`)."""
        stats = self._stats.snapshot(self._pending())
        with self._lock:
            self._seq += 1
            seq = self._seq
        return TelemetryMessage(
            worker_id=self._worker_id,
            ts=self._wall_clock(),
            seq=seq,
            interval_s=self._interval_s,
            device=self._device,
            models=self._models,
            queue_depth=self._queue_depth(),
            queue_capacity=self._queue_capacity,
            in_flight=stats.in_flight,
            batch_size=stats.batch_size,
            max_batch=self._max_batch,
            utilization=stats.utilization,
            service_ms=stats.service_ms,
            served=stats.served,
            rejected=stats.rejected,
            expired=stats.expired,
            errors=stats.errors,
            throughput_rps=stats.throughput_rps,
            batches=stats.batches,
            queue_ms_total=stats.queue_ms_total,
            compute_ms_total=stats.compute_ms_total,
            queue_ms_recent=stats.queue_ms_recent,
            compute_ms_recent=stats.compute_ms_recent,
            splits=stats.splits,
            direct=True,
        )

    def publish_now(self) -> TelemetryMessage:
        message = self.build()
        try:
            self._publish(encode_message(message))
        except Exception:  # a publish failure must not end the telemetry thread
            LOG.exception("worker %s: telemetry publish failed", self._worker_id)
        self._last = message
        self._last_at = self._clock()
        return message

    def nudge(self) -> None:
        """Something changed (cheap; called from the network and compute threads)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            raise WorkerStateError(f"telemetry of {self._worker_id} is already started")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"telemetry-{self._worker_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        self.publish_now()
        while not self._stopping.is_set():
            due_in = self._last_at + self._interval_s - self._clock()
            woken = self._wake.wait(timeout=max(0.0, due_in))
            if self._stopping.is_set():
                return
            now = self._clock()
            if now - self._last_at >= self._interval_s:
                self.publish_now()
            elif woken:
                # Rate limit on publishing and on looking alike: a look that found nothing worth
                # publishing still waits out the gap, so a stream of requests wakes this thread
                # once per gap rather than once per request (a core taken from the compute thread).
                since = now - max(self._last_at, self._checked_at)
                if since < self._min_gap_s:
                    self._stopping.wait(self._min_gap_s - since)  # keep the wake flag
                    continue
                self._wake.clear()
                self._checked_at = now
                if self._changed_significantly():
                    self.publish_now()

    def _changed_significantly(self) -> bool:
        last = self._last
        if last is None:
            return True
        stats = self._stats.snapshot()
        depth = self._queue_depth()
        new_split = any(
            split not in last.service_ms.get(model, {})
            for model, splits in stats.service_ms.items()
            for split in splits
        )
        return (
            abs(depth - last.queue_depth) >= self.depth_step
            or new_split
            or stats.rejected != last.rejected
        )
