"""Image frame decoding off the compute thread, under a per-frame CPU-time budget.

The compute thread hands a batch's image frames (JPEG, WebP: a hostile one can take far longer
to decode than its size says) to a small pool of decode threads and waits for them; tensor
frames, whose decoding is linear in their bytes and bounded by the frame limits, it decodes
itself. A frame whose decoding has used more than `budget_s` of its thread's CPU time is answered
`decode_timeout` at once (the thread finishes it and throws the result away), so one slow frame
delays its batch-mates by about the budget, never by its own decoding time. CPU time, not wall
time, because on a busy machine a good frame can wait for a core or for the GIL far longer than
it decodes: it is not charged for that. `max_wait_s` caps the wall time a batch waits all the
same. Pillow and zstd do their heavy work in C with the GIL released; what they do holding the
GIL (Pillow's JPEG marker parse) is bounded before they start (schemas.imaging).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge_worker.errors import DecodeTimeoutError
from splitmq_base.gcwatch import GC_PAUSES

T = TypeVar("T")
R = TypeVar("R")

#: How often a waiting batch looks at its decodes' CPU time, as a fraction of the budget.
CHECK_FRACTION = 0.1


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One frame's decode: its value, or the exception that ends its request, and its time."""

    value: R | None
    error: BaseException | None
    decode_ms: float


class _Job(Generic[T, R]):
    """One decode, which knows how much CPU time its thread has spent on it so far."""

    def __init__(self, decode: Callable[[T], R], item: T) -> None:
        self._decode = decode
        self._item = item
        self._clock: int | None = None
        self._cpu_start = 0.0
        self._thread = 0
        self._gc_start = 0.0

    def run(self) -> tuple[R, float]:
        self._thread = threading.get_ident()
        clock = time.pthread_getcpuclockid(self._thread)
        self._gc_start = GC_PAUSES.thread_cpu_s(self._thread)
        self._cpu_start = time.clock_gettime(clock)
        self._clock = clock  # set last: cpu_s() reads the start only once the clock is set
        started = time.perf_counter()
        value = self._decode(self._item)
        return value, (time.perf_counter() - started) * 1000.0

    def cpu_s(self) -> float:
        """CPU seconds spent on this decode (0 while it waits for a thread), less what its
        thread spent in garbage collections meanwhile: those belong to the whole process."""
        if self._clock is None:
            return 0.0
        try:
            spent = time.clock_gettime(self._clock) - self._cpu_start
        except OSError:  # the thread is gone: the job is over
            return 0.0
        return spent - (GC_PAUSES.thread_cpu_s(self._thread) - self._gc_start)


class DecodePool:
    """`threads` decode threads; `decode_all` runs one batch's decodes under the budget."""

    def __init__(
        self, threads: int, budget_s: float, *, max_wait_s: float, name: str = "decode"
    ) -> None:
        self.budget_s = budget_s
        self.max_wait_s = max_wait_s
        self.threads = threads
        GC_PAUSES.install()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self.overran = 0  # decodes answered decode_timeout (their threads still finished them)

    def decode_all(self, items: Sequence[T], decode: Callable[[T], R]) -> list[Outcome[R]]:
        """Each item's outcome, in order: its value, its decoder's exception, or
        `DecodeTimeoutError` once it used over the budget's CPU time or the batch waited
        `max_wait_s`."""
        jobs = [_Job(decode, item) for item in items]
        futures = [self._executor.submit(job.run) for job in jobs]
        overran = self._wait(futures, jobs)
        return [self._outcome(f, overran.get(i), jobs[i]) for i, f in enumerate(futures)]

    def _wait(
        self, futures: list[Future[tuple[R, float]]], jobs: list[_Job[T, R]]
    ) -> dict[int, str]:
        """Why each decode given up on was (by index); every other one is done."""
        give_up_at = time.monotonic() + self.max_wait_s
        pending = set(range(len(futures)))
        overran: dict[int, str] = {}
        while pending:
            left = max(0.0, give_up_at - time.monotonic())
            slice_s = min(self.budget_s * CHECK_FRACTION, left)
            wait([futures[i] for i in pending], slice_s, FIRST_COMPLETED)
            late = time.monotonic() >= give_up_at
            for i in list(pending):
                if futures[i].done():
                    pending.discard(i)
                elif jobs[i].cpu_s() > self.budget_s:
                    pending.discard(i)
                    overran[i] = f"used over its budget of {self.budget_s * 1000.0:g} ms of CPU"
                elif late:
                    pending.discard(i)
                    overran[i] = f"was not done after {self.max_wait_s * 1000.0:g} ms"
        return overran

    def _outcome(
        self, future: Future[tuple[R, float]], overran: str | None, job: _Job[T, R]
    ) -> Outcome[R]:
        if overran is not None:
            future.cancel()  # not started yet: never runs; running: its result is dropped
            self.overran += 1
            cpu_ms = job.cpu_s() * 1000.0
            error = DecodeTimeoutError(f"decoding {overran} ({cpu_ms:.0f} ms of CPU so far)")
            return Outcome(None, error, cpu_ms)
        exc = future.exception()
        if exc is not None:
            return Outcome(None, exc, 0.0)
        value, decode_ms = future.result()
        return Outcome(value, None, decode_ms)

    def warm_up(self, run: Callable[[], object]) -> None:
        """`run()` once on every decode thread: a thread's first decode of a codec pays its
        one-time setup (measured: a first WebP decode in a fresh worker, 189 ms of CPU), which
        must be charged to no request's budget."""
        ready = threading.Barrier(self.threads)

        def once() -> None:
            ready.wait()  # each job holds its thread until all have one: one job per thread
            run()

        for future in [self._executor.submit(once) for _ in range(self.threads)]:
            future.result()

    def close(self) -> None:
        """Stop taking decodes; running ones finish on their threads (not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
