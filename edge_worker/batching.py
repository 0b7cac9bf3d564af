"""The worker's bounded request queue and its dynamic batcher.

Two bounds: `capacity` is what the worker advertises as its MQTT ReceiveMaximum, so a broker
that enforces it never delivers more; `max_bytes` is the hard memory bound. Mosquitto 2.0.11
does not enforce a client's ReceiveMaximum once acknowledgements flow (measured: 225
unacknowledged deliveries to a client that asked for 8), so the queue accepts requests past
`capacity` (they were delivered; dropping them would lose them) and refuses only past
`max_bytes`, where the worker answers "rejected" instead of holding more.

Requests wait in one queue per (model, split) key. The batcher takes the oldest request of all,
then gathers more of the same key until it has `max_batch` of them or `max_wait_s` has passed
since that first request arrived (a request that already waited that long starts its batch at
once). Oldest-first across keys is what keeps splits fair: a busy split cannot starve a quiet
one, whose oldest request is served as soon as it is the oldest of all. A request that asked for
the bit-exact path waits in a lane of its own and always runs alone (a batch of 1). Nothing here
touches MQTT or a model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from edge_worker.errors import (
    QueueFullError,
    QueueLimitsError,
    QueueStateError,
    WorkerStoppingError,
)

BatchKey = tuple[str, int]  # (model, split)


@dataclass(frozen=True)
class Queued:
    """What the queue needs of a request: its batch key, when it arrived (monotonic s) and
    how many bytes it holds."""

    key: BatchKey
    received: float
    nbytes: int
    exact: bool = field(default=False, kw_only=True)  # asked for the bit-exact path (batch 1)


T = TypeVar("T", bound=Queued)


@dataclass
class _Lane(Generic[T]):
    items: deque[T] = field(default_factory=deque)


class RequestQueue(Generic[T]):
    """A multi-key FIFO with a dynamic batcher; thread-safe.

    `put` never blocks (it runs in paho's network thread). It raises `QueueFullError` only when
    the request would push the held bytes past `max_bytes` (one request is always admitted), and
    `WorkerStoppingError` once the queue is closed (a request arriving during shutdown is
    answered, not a bug). Closing is once only: a second `close` raises `QueueStateError`.
    """

    def __init__(
        self, capacity: int, max_bytes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1:
            raise QueueLimitsError(f"queue capacity must be >= 1, got {capacity}")
        if max_bytes < 1:
            raise QueueLimitsError(f"queue byte limit must be >= 1, got {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._clock = clock
        self._lanes: dict[tuple[BatchKey, bool], _Lane[T]] = {}
        self._size = 0
        self._bytes = 0
        self.peak = 0  # most requests held at once
        self._closed = False
        self._changed = threading.Condition()

    def __len__(self) -> int:
        with self._changed:
            return self._size

    @property
    def held_bytes(self) -> int:
        with self._changed:
            return self._bytes

    def pending_by_key(self) -> dict[BatchKey, int]:
        """Requests waiting now, per (model, split)."""
        with self._changed:
            pending: dict[BatchKey, int] = {}
            for (key, _), lane in self._lanes.items():
                if lane.items:
                    pending[key] = pending.get(key, 0) + len(lane.items)
            return pending

    def put(self, item: T) -> None:
        with self._changed:
            if self._closed:
                raise WorkerStoppingError("the worker is shutting down")
            if self._size and self._bytes + item.nbytes > self.max_bytes:
                raise QueueFullError(
                    f"worker holds {self._size} requests ({self._bytes} bytes); one more of "
                    f"{item.nbytes} bytes would pass its limit of {self.max_bytes} bytes"
                )
            self._lanes.setdefault((item.key, item.exact), _Lane()).items.append(item)
            self._size += 1
            self._bytes += item.nbytes
            self.peak = max(self.peak, self._size)
            self._changed.notify_all()

    def close(self) -> None:
        """Refuse new requests and wake the batcher; `take_batch` returns [] once empty."""
        with self._changed:
            if self._closed:
                raise QueueStateError("the request queue is already closed")
            self._closed = True
            self._changed.notify_all()

    def drain(self) -> list[T]:
        """Remove and return everything still queued (oldest first), e.g. at shutdown."""
        with self._changed:
            items = sorted(
                (item for lane in self._lanes.values() for item in lane.items),
                key=lambda item: item.received,
            )
            self._lanes.clear()
            self._size = 0
            self._bytes = 0
            return items

    def take_batch(
        self,
        max_batch: int,
        max_wait_s: float,
        timeout_s: float | None = None,
        on_take: Callable[[T], None] | None = None,
    ) -> list[T]:
        """The next batch: 1..max_batch requests of one key, oldest request first.

        Blocks up to `timeout_s` (None = until a request comes or the queue closes) for the
        first request; returns [] on timeout or when closed and empty. `on_take` is called for
        each request as it leaves the queue (the worker acknowledges it there, so the broker
        can deliver the next one while the batch is still gathering); it must not block.
        """
        take = on_take or (lambda item: None)
        with self._changed:
            first = self._wait_first(timeout_s)
            if first is None:
                return []
            take(first)
            batch = [first]
            lane = self._lanes[(first.key, first.exact)]
            gather_until = first.received + max_wait_s
            limit = 1 if first.exact else max_batch
            while len(batch) < limit:
                if lane.items:
                    item = self._pop(lane)
                    take(item)
                    batch.append(item)
                    continue
                remaining = gather_until - self._clock()
                if remaining <= 0 or self._closed:
                    break
                self._changed.wait(remaining)
            return batch

    def _wait_first(self, timeout_s: float | None) -> T | None:
        deadline = None if timeout_s is None else self._clock() + timeout_s
        while self._size == 0:
            if self._closed:
                return None
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                return None
            self._changed.wait(remaining)
        oldest = min(
            (lane for lane in self._lanes.values() if lane.items),
            key=lambda lane: lane.items[0].received,
        )
        return self._pop(oldest)

    def _pop(self, lane: _Lane[T]) -> T:
        item = lane.items.popleft()
        self._size -= 1
        self._bytes -= item.nbytes
        return item
