"""How long Python's garbage collector has paused the process: a device time that a collection
stretched says nothing about the device's speed, so the node does not teach it to its policy."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

#: A run is stretched when collections took more than this share of it ...
STRETCHED_SHARE = 0.1
#: ... and at least this long (a young-generation collection takes microseconds).
STRETCHED_MIN_S = 0.001


class GcPauses:
    """Total seconds spent in collections since `install()`; read it before and after a run."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started: float | None = None
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._on_gc)
                self._installed = True

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.total_s += time.perf_counter() - self._started
            self._started = None

    @staticmethod
    def stretched(gc_s: float, run_s: float) -> bool:
        return gc_s >= STRETCHED_MIN_S and gc_s > STRETCHED_SHARE * run_s


#: The process's one watch; a device node installs it when it is built.
GC_PAUSES = GcPauses()
