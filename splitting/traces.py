"""Uplink traces (mahimahi format) and the link model shared by the simulator and the shaper.

A mahimahi trace lists, one per line, the millisecond at which one 1500-byte packet may cross the
link; several packets in one millisecond repeat the timestamp, and the trace repeats with a
period equal to its last timestamp (as mahimahi's link shell does).

The link model is a FIFO over the device's TCP byte stream: each delivery opportunity carries up
to `PACKET_PAYLOAD_BYTES` of stream bytes that were handed to the link at or before it; an
opportunity that finds the queue empty is lost. Bytes released by the link reach the broker
`one_way_s` later; the broker's replies (PUBACK, results) cross the downlink with the one-way
delay only. The simulator computes this in closed form (`Uplink`); `device_node.shaper` applies
the same rule to a live TCP stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitting.errors import SplittingError

#: mahimahi's packet: one delivery opportunity is one packet of this many bytes on the wire.
PACKET_BYTES = 1500
#: TCP payload of a full packet (1500 - 20 IPv4 - 20 TCP - 12 TCP timestamp option): the
#: shaper sees the stream, not packets, so an opportunity releases this many stream bytes.
PACKET_PAYLOAD_BYTES = 1448
#: MQTT v5 PUBLISH framing around a payload: fixed header (5), topic (~40), packet id (2) and
#: properties (response topic ~40, correlation data ~36, message expiry 5, lengths).
PUBLISH_OVERHEAD_BYTES = 130
#: Default one-way delay of the emulated cellular path, each way (an LTE RTT of ~40 ms).
DEFAULT_ONE_WAY_MS = 20.0


class TraceError(SplittingError):
    """A trace file or synthetic trace specification that cannot describe a link."""


def wire_bytes(payload_bytes: int) -> int:
    """Stream bytes of one MQTT publish carrying `payload_bytes`."""
    if payload_bytes < 0:
        raise TraceError(f"payload size must be >= 0, got {payload_bytes}")
    return payload_bytes + PUBLISH_OVERHEAD_BYTES


@dataclass(frozen=True)
class UplinkTrace:
    """Delivery opportunities of one period (ms, non-decreasing), repeated every `period_ms`."""

    times_ms: np.ndarray
    period_ms: int
    name: str = "trace"
    _times_float: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        times = np.asarray(self.times_ms, dtype=np.int64)
        if times.ndim != 1 or times.size == 0:
            raise TraceError(f"{self.name}: a trace needs at least one delivery opportunity")
        if times[0] < 0:
            raise TraceError(f"{self.name}: negative timestamp {int(times[0])}")
        if np.any(np.diff(times) < 0):
            bad = int(np.argmax(np.diff(times) < 0)) + 1
            raise TraceError(f"{self.name}: timestamps decrease at line {bad + 1}")
        if self.period_ms <= 0 or times[-1] > self.period_ms:
            raise TraceError(
                f"{self.name}: period {self.period_ms} ms must be > 0 and >= the last timestamp"
            )
        object.__setattr__(self, "times_ms", times)
        object.__setattr__(self, "_times_float", times.astype(np.float64))

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path) -> UplinkTrace:
        """Read a mahimahi trace; its period is its last timestamp, as in mahimahi."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc}") from exc
        return cls.parse(text, name=path.name)

    @classmethod
    def parse(cls, text: str, *, name: str = "trace") -> UplinkTrace:
        values: list[int] = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                values.append(int(stripped))
            except ValueError:
                raise TraceError(
                    f"{name}: line {number} is not an integer millisecond: {stripped[:40]!r}"
                ) from None
        if not values:
            raise TraceError(f"{name}: the trace is empty")
        if values[-1] <= 0:
            raise TraceError(f"{name}: the last timestamp (the period) must be > 0 ms")
        return cls(np.array(values, dtype=np.int64), period_ms=values[-1], name=name)

    @classmethod
    def fixed_rate(cls, mbit_s: float, *, period_ms: int = 1000) -> UplinkTrace:
        """A synthetic link of constant rate: `mbit_s` of 1500-byte packets, evenly spread."""
        if not math.isfinite(mbit_s) or mbit_s <= 0:
            raise TraceError(f"a fixed-rate link needs a rate > 0 Mbit/s, got {mbit_s}")
        packets = round(mbit_s * 1e6 / 8 / PACKET_BYTES * period_ms / 1000)
        if packets < 1:
            raise TraceError(
                f"{mbit_s} Mbit/s is less than one packet per {period_ms} ms: use a longer period"
            )
        times = (np.arange(1, packets + 1, dtype=np.int64) * period_ms) // packets
        return cls(times, period_ms=period_ms, name=f"fixed-{mbit_s:g}mbit")

    # -- queries ----------------------------------------------------------------------------

    @property
    def per_period(self) -> int:
        return int(self.times_ms.size)

    @property
    def mean_mbit_s(self) -> float:
        return self.per_period * PACKET_BYTES * 8 / (self.period_ms / 1000) / 1e6

    def opportunity_ms(self, index: int) -> float:
        """Time (ms) of delivery opportunity `index`, counting across repetitions."""
        cycle, within = divmod(index, self.per_period)
        return float(cycle * self.period_ms + self.times_ms[within])

    def first_at_or_after(self, t_ms: float) -> int:
        """Index of the first delivery opportunity at or after `t_ms`."""
        if t_ms <= 0:
            return 0
        cycle = math.floor(t_ms / self.period_ms)
        within = t_ms - cycle * self.period_ms
        if cycle > 0 and within + self.period_ms <= self._times_float[-1]:
            # t sits on a period boundary that the previous cycle's last opportunities share.
            cycle, within = cycle - 1, within + self.period_ms
        j = int(np.searchsorted(self._times_float, within, side="left"))
        if j == self.per_period:  # only reachable through rounding at the period's edge
            cycle, j = cycle + 1, 0
        return cycle * self.per_period + j

    def opportunities_before(self, t_ms: float) -> int:
        """Number of delivery opportunities strictly before `t_ms`."""
        return self.first_at_or_after(t_ms)

    def rate_series(self, duration_s: float, bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(bin start s, Mbit/s) of the link's capacity in bins of `bin_s` over `duration_s`."""
        if bin_s <= 0 or duration_s <= 0:
            raise TraceError("rate_series needs a positive duration and bin")
        edges = np.arange(0.0, duration_s + bin_s, bin_s)
        counts = np.array([self.opportunities_before(e * 1000) for e in edges])
        rates = np.diff(counts) * PACKET_BYTES * 8 / bin_s / 1e6
        return edges[:-1], rates


@dataclass(frozen=True)
class Delivery:
    """One transmission through the uplink (seconds on the simulation clock)."""

    handed_s: float
    released_s: float  # the last byte left the link
    arrives_s: float  # ... and reached the broker
    acked_s: float  # the broker's PUBACK reached the device

    @property
    def sample_s(self) -> float:
        """Hand-over to PUBACK: what the device measures."""
        return self.acked_s - self.handed_s


class Uplink:
    """The device's uplink as a FIFO over a trace, plus a fixed one-way delay each way.

    `send` must be called in non-decreasing hand-over order (the device's socket is one FIFO).
    `copy()` forks the state (the oracle tries every split from the same state).
    """

    def __init__(
        self,
        trace: UplinkTrace,
        *,
        one_way_ms: float = DEFAULT_ONE_WAY_MS,
        payload_per_opportunity: int = PACKET_PAYLOAD_BYTES,
    ) -> None:
        if one_way_ms < 0:
            raise TraceError(f"one-way delay must be >= 0 ms, got {one_way_ms}")
        if payload_per_opportunity <= 0:
            raise TraceError("an opportunity must carry at least one byte")
        self.trace = trace
        self.one_way_s = one_way_ms / 1000
        self.capacity = payload_per_opportunity
        self._next_index = 0  # first opportunity not used at all
        self._spare = 0  # bytes left in opportunity _next_index - 1
        self._last_handed_s = 0.0

    def copy(self) -> Uplink:
        clone = Uplink.__new__(Uplink)
        clone.__dict__.update(self.__dict__)
        return clone

    @property
    def last_handed_s(self) -> float:
        return self._last_handed_s

    def send(self, nbytes: int, t_s: float) -> Delivery:
        """Hand `nbytes` stream bytes to the link at `t_s`; when do they arrive and get acked?"""
        if nbytes <= 0:
            raise TraceError(f"a transmission needs at least one byte, got {nbytes}")
        if t_s < self._last_handed_s - 1e-9:
            raise TraceError(
                f"hand-over at {t_s:.6f} s precedes the previous one ({self._last_handed_s:.6f} s)"
            )
        self._last_handed_s = max(t_s, self._last_handed_s)
        start = self.trace.first_at_or_after(t_s * 1000)
        remaining = nbytes
        if self._next_index > start and self._spare > 0:
            # The link is still busy with earlier bytes at an opportunity after t: share it.
            used = min(self._spare, remaining)
            remaining -= used
            self._spare -= used
            if remaining == 0:
                return self._delivery(t_s, self._next_index - 1)
        begin = max(start, self._next_index)
        count = -(-remaining // self.capacity)
        last = begin + count - 1
        self._next_index = last + 1
        self._spare = count * self.capacity - remaining
        return self._delivery(t_s, last)

    def _delivery(self, t_s: float, last_index: int) -> Delivery:
        released = self.trace.opportunity_ms(last_index) / 1000
        arrives = released + self.one_way_s
        return Delivery(
            handed_s=t_s, released_s=released, arrives_s=arrives, acked_s=arrives + self.one_way_s
        )
