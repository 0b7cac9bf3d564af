"""Frame decoding off the compute thread, under a per-frame time budget.

The compute thread hands a batch's frames to a small pool of decode threads and waits at most
`budget_s` for them: a frame whose decode is not done by then is answered `decode_timeout`
(the thread finishes it and throws the result away), so one slow frame delays its batch-mates
by at most the budget, never by its own decoding time. Pillow and zstd do their heavy work in C
with the GIL released; what they do holding the GIL (Pillow's JPEG marker parse) is bounded
before they start (schemas.imaging).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge_worker.errors import DecodeTimeoutError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One frame's decode: its value, or the exception that ends its request, and its time."""

    value: R | None
    error: BaseException | None
    decode_ms: float


class DecodePool:
    """`threads` decode threads; `decode_all` runs one batch's decodes under `budget_s`."""

    def __init__(self, threads: int, budget_s: float, *, name: str = "decode") -> None:
        self.budget_s = budget_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self.overran = 0  # decodes answered decode_timeout (their threads still finished them)

    def decode_all(self, items: Sequence[T], decode: Callable[[T], R]) -> list[Outcome[R]]:
        """Each item's outcome, in order; every item's decode ends within the budget or is
        answered `DecodeTimeoutError`."""
        started = time.perf_counter()
        futures = [self._executor.submit(_timed, decode, item) for item in items]
        done, _ = wait(futures, timeout=self.budget_s)
        return [self._outcome(future, future in done, started) for future in futures]

    def _outcome(self, future: Future[tuple[R, float]], done: bool, started: float) -> Outcome[R]:
        if not done:
            future.cancel()  # not started yet: never runs; running: its result is dropped
            with self._lock:
                self.overran += 1
            waited_ms = (time.perf_counter() - started) * 1000.0
            error = DecodeTimeoutError(
                f"decoding took over the worker's budget of {self.budget_s * 1000.0:g} ms"
            )
            return Outcome(None, error, waited_ms)
        exc = future.exception()
        if exc is not None:
            return Outcome(None, exc, 0.0)
        value, decode_ms = future.result()
        return Outcome(value, None, decode_ms)

    def close(self) -> None:
        """Stop taking decodes; running ones finish on their threads (not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed(decode: Callable[[T], R], item: T) -> tuple[R, float]:
    started = time.perf_counter()
    value = decode(item)
    return value, (time.perf_counter() - started) * 1000.0
