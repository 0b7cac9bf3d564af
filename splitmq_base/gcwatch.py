"""How long Python's garbage collector has paused the process, and each thread's CPU time in it.

A device time that a collection stretched says nothing about the device's speed, so the node
does not teach it to its policy; a worker does not charge a frame's decode budget for a full
collection that happened to start in its decode thread (measured: 163 ms of CPU in a worker
holding a loaded model, for an int8 frame that decodes in under 1 ms)."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from typing import Any

#: A run is stretched when collections took more than this share of it ...
STRETCHED_SHARE = 0.1
#: ... and at least this long (a young-generation collection takes microseconds).
STRETCHED_MIN_S = 0.001


class GcPauses:
    """Total seconds spent in collections since `install()`; read it before and after a run.
    `thread_cpu_s(ident)`: the CPU seconds thread `ident` has spent collecting (a collection
    runs in the thread whose allocation triggered it)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started: float | None = None
        self._cpu_started: dict[int, tuple[int, float]] = {}
        self._thread_cpu_s: dict[int, float] = {}
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._on_gc)
                self._installed = True

    def thread_cpu_s(self, ident: int) -> float:
        """CPU seconds thread `ident` has spent in collections, the one running now included
        (a reader in another thread must not charge a long collection to the work it paused)."""
        spent = self._thread_cpu_s.get(ident, 0.0)
        running = self._cpu_started.get(ident)
        if running is not None:
            clock, started = running
            with contextlib.suppress(OSError):
                spent += time.clock_gettime(clock) - started
        return spent

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._started = time.perf_counter()
            clock = time.pthread_getcpuclockid(ident)
            self._cpu_started[ident] = (clock, time.clock_gettime(clock))
            return
        if self._started is not None:
            self.total_s += time.perf_counter() - self._started
            self._started = None
        running = self._cpu_started.get(ident)
        if running is not None:
            clock, started = running
            done = self._thread_cpu_s.get(ident, 0.0) + time.clock_gettime(clock) - started
            self._thread_cpu_s[ident] = done
            del self._cpu_started[ident]  # after the total: a reader never sees it counted twice

    @staticmethod
    def stretched(gc_s: float, run_s: float) -> bool:
        return gc_s >= STRETCHED_MIN_S and gc_s > STRETCHED_SHARE * run_s


#: The process's one watch; a device node and a worker's decode pool install it.
GC_PAUSES = GcPauses()
