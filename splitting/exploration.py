"""When a device re-tests offloading that its chooser has stopped taking.

Every belief behind a "local is faster" decision (the link, the worker's load, the device's own
speed, the offload bias) can be wrong, and a device that runs locally gathers no evidence
against it. `Explorer` answers when to spend one request on the best offload anyway: after
`after_s` without an offload, then at intervals that double while re-tests confirm local (up to
`max_s`), and again at `after_s` once a re-test beats the local prediction. Exploratory requests
race the device's own tail, so a lost re-test costs little more than its encode and send.
"""

from __future__ import annotations

from splitting.errors import SplittingError


class ExplorerError(SplittingError):
    """Exploration intervals that make no sense."""


class Explorer:
    """Schedules re-tests of offloading; time is passed in, never read."""

    def __init__(self, *, after_s: float = 2.0, max_s: float = 60.0) -> None:
        if after_s < 0 or max_s <= 0:
            raise ExplorerError("explore after must be >= 0 s (0: never) and its cap > 0 s")
        self.after_s = after_s
        self.max_s = max(max_s, after_s)
        self.interval_s = after_s
        self._last_offload: float | None = None
        self._open: tuple[float, float] | None = None  # (started, local prediction ms)
        self.explorations = 0
        self.confirmed_local = 0

    def due(self, now: float) -> bool:
        """Whether the request starting now should re-test offloading."""
        if self._open is not None and now - self._open[0] > self.max_s:
            self._open = None  # its result never came
        if self.after_s == 0 or self._open is not None:
            return False
        if self._last_offload is None:
            self._last_offload = now  # the clock starts with the first decision
        return now - self._last_offload >= self.interval_s

    def on_offload(self, now: float, *, exploring_against_ms: float | None = None) -> None:
        """A request starting now was offloaded; a re-test names the local prediction it
        must beat."""
        self._last_offload = now
        if exploring_against_ms is not None:
            self.explorations += 1
            self._open = (now, exploring_against_ms)

    def on_result(self, latency_ms: float, now: float, *, offloaded: bool) -> None:
        """A request's result; a re-test's says whether offloading paid: the server's answer
        came first (`offloaded`) and beat the local prediction."""
        if self._open is None:
            return
        started, local_ms = self._open
        if abs(now - latency_ms / 1000 - started) > 0.005:
            return  # another request's result
        self._open = None
        if offloaded and latency_ms < local_ms:
            self.interval_s = self.after_s  # offloading pays again: re-test soon if dropped
        else:
            self.confirmed_local += 1
            self.interval_s = min(self.max_s, max(self.interval_s, 0.5) * 2)
