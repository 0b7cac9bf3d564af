"""Drive split policies through the simulated system, request by request.

A policy sees only what the live device would have seen by then: every observation (hand-over,
PUBACK, measured head time, result, telemetry) is queued at the time it happens and delivered
before the first `choose` at or after that time. The oracle instead tries every split from the
current state and keeps the one that finishes first.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.messages import TelemetryMessage
from splitmq.reports import latency_stats
from splitmq.sim.scenarios import LOAD_STEP_S, ServerLoad
from splitmq.sim.system import WORKER_QUEUE_CAPACITY, DeviceState, EdgeServer, Outcome
from splitmq_base.errors import SplitmqError
from splitting.estimators import MIN_TRANSFER_S
from splitting.latency import DeviceProfile
from splitting.policy import DynamicSplit, SplitPolicy
from splitting.server_profile import ServerProfile
from splitting.traces import DEFAULT_ONE_WAY_MS, Uplink, UplinkTrace, wire_bytes

ARRIVALS = ("periodic", "poisson")


class SimulationError(SplitmqError):
    """Settings the simulator cannot run with."""


@dataclass(frozen=True)
class SimSettings:
    """`duration_s`: simulated time (the trace repeats); `rate_hz`: request arrivals."""

    rate_hz: float = 2.0
    duration_s: float = 1000.0
    one_way_ms: float = DEFAULT_ONE_WAY_MS
    telemetry_interval_s: float = 1.0
    telemetry_min_gap_s: float = 0.1
    arrivals: str = "periodic"
    seed: int = 0
    worker_id: str = "edge-sim"
    dtype: str = "fp32"
    start_s: float = 1.0
    #: False: one request at a time, as the live device node runs (the next starts when the
    #: previous has finished, at the earliest at its slot). True: requests start at their
    #: arrival whatever is still running (a pipelined device).
    pipelined: bool = False

    def __post_init__(self) -> None:
        if self.rate_hz <= 0 or self.duration_s <= self.start_s:
            raise SimulationError("need a rate > 0 Hz and a duration longer than the start")
        if self.arrivals not in ARRIVALS:
            raise SimulationError(f"arrivals must be one of {ARRIVALS}, got {self.arrivals!r}")
        if self.telemetry_interval_s <= 0 or self.one_way_ms < 0:
            raise SimulationError("telemetry interval must be > 0 s and one-way delay >= 0 ms")


@dataclass
class StrategyRun:
    """Per-request record of one strategy over one trace."""

    name: str
    arrival_s: np.ndarray
    k: np.ndarray
    latency_ms: np.ndarray
    offloaded: np.ndarray
    fallback: np.ndarray
    rate_estimate_bps: np.ndarray | None = None
    probes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Per request: all the device computed (ms), the energy proxy.
    compute_ms: np.ndarray | None = None
    #: Per offloaded request with an estimate: |log(estimated / actual rate over its transfer)|.
    estimate_error: np.ndarray | None = None

    def stats(self) -> dict[str, Any]:
        """The run's latency summary (`splitmq.reports.LatencyStats`, as a dict)."""
        return latency_stats(self.latency_ms.tolist())


def arrival_times(settings: SimSettings) -> np.ndarray:
    if settings.arrivals == "periodic":
        return np.arange(settings.start_s, settings.duration_s, 1 / settings.rate_hz)
    rng = np.random.default_rng(settings.seed + 1)
    count = int(settings.rate_hz * settings.duration_s * 1.2) + 10
    times = settings.start_s + np.cumsum(rng.exponential(1 / settings.rate_hz, count))
    return times[times < settings.duration_s]


class _Recorder:
    """Collects one strategy's outcomes into a StrategyRun."""

    def __init__(self, name: str, *, estimates: bool = False) -> None:
        self.name = name
        self.rows: list[tuple[float, int, float, bool, bool]] = []
        self.rates: list[float] | None = [] if estimates else None
        self.compute: list[float] = []
        self.errors: list[float] = []
        self.last_done_s = -math.inf

    def add(
        self, outcome: Outcome, rate: float | None, predicted_rate: float | None = None
    ) -> None:
        self.rows.append(
            (outcome.arrival_s, outcome.k, outcome.latency_ms, outcome.offloaded, outcome.fallback)
        )
        self.compute.append(outcome.compute_ms)
        self.last_done_s = max(self.last_done_s, outcome.done_s)
        if self.rates is not None:
            self.rates.append(math.nan if rate is None else rate)
        actual = _actual_rate(outcome)
        if predicted_rate is not None and predicted_rate > 0 and actual is not None:
            self.errors.append(abs(math.log(predicted_rate / actual)))

    def finish(self, probes: int) -> StrategyRun:
        if not self.rows:
            raise SimulationError(f"{self.name}: no request fits in the simulated time")
        t, k, latency, offloaded, fallback = (
            np.array(column) for column in zip(*self.rows, strict=True)
        )
        rates = np.array(self.rates) if self.rates is not None else None
        return StrategyRun(
            self.name,
            t.astype(float),
            k.astype(np.int64),
            latency.astype(float),
            offloaded.astype(bool),
            fallback.astype(bool),
            rates,
            probes,
            compute_ms=np.array(self.compute, dtype=float),
            estimate_error=np.array(self.errors, dtype=float) if rates is not None else None,
        )


def _actual_rate(outcome: Outcome) -> float | None:
    """Stream bytes per second the link gave this request's frame, hand-over to last byte."""
    delivery = outcome.delivery
    if delivery is None or outcome.payload_bytes <= 0:
        return None
    seconds = max(delivery.released_s - delivery.handed_s, MIN_TRANSFER_S)
    return wire_bytes(outcome.payload_bytes) / seconds


class _Observations:
    """Observations waiting for their time, delivered in time order."""

    def __init__(self, telemetry: list[tuple[float, str, TelemetryMessage]]) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        for t, worker, message in telemetry:
            self.at(t, "on_telemetry", worker, message)

    def at(self, t: float, method: str, *args: Any, **keywords: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), _caller(method, keywords), args))

    def deliver(self, policy: SplitPolicy, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            t, _, call, args = heapq.heappop(self._heap)
            call(policy, *args, t)


def _caller(method: str, keywords: dict[str, Any]) -> Callable[..., None]:
    def call(policy: SplitPolicy, *args: Any) -> None:
        getattr(policy, method)(*args, **keywords)

    return call


class Simulation:
    """One trace, one load scenario, one device and server profile: run strategies on it."""

    def __init__(
        self,
        device: DeviceProfile,
        server_profile: ServerProfile,
        trace: UplinkTrace,
        load: ServerLoad,
        settings: SimSettings | None = None,
    ) -> None:
        self.device = device
        self.server_profile = server_profile
        self.trace = trace
        self.load = load
        self.settings = settings or SimSettings()
        self.server = EdgeServer(load, server_profile, device, dtype=self.settings.dtype)
        self.arrivals = arrival_times(self.settings)
        self.telemetry = self._telemetry_stream()

    def _telemetry_stream(self) -> list[tuple[float, str, TelemetryMessage]]:
        """The worker's telemetry as the device receives it (one-way delay later).

        Like `edge_worker.telemetry.TelemetryReporter`: every interval, and between intervals
        when the queue depth moved by an eighth of the queue capacity since the last message,
        at most one message per `telemetry_min_gap_s`. Checked on the load's time grid.
        """
        s = self.settings
        one_way = s.one_way_ms / 1000
        step = max(1, WORKER_QUEUE_CAPACITY // 8)
        stream: list[tuple[float, str, TelemetryMessage]] = []
        last_at, last_depth = -math.inf, 0
        for t in np.arange(0.0, s.duration_s, LOAD_STEP_S):
            now = float(t)
            depth = self.load.at(now)[1]
            due = now - last_at >= s.telemetry_interval_s - 1e-9
            changed = abs(depth - last_depth) >= step and now - last_at >= s.telemetry_min_gap_s
            if not (due or changed):
                continue
            message = self.server.telemetry(
                now, len(stream), interval_s=s.telemetry_interval_s, worker_id=s.worker_id
            )
            stream.append((now + one_way, s.worker_id, message))
            last_at, last_depth = now, depth
        return stream

    def new_state(self) -> DeviceState:
        uplink = Uplink(self.trace, one_way_ms=self.settings.one_way_ms)
        return DeviceState(self.device, uplink, self.server)

    # -- strategies -----------------------------------------------------------------------

    def run_policy(self, name: str, policy: SplitPolicy) -> StrategyRun:
        """Run a policy over every request: what it chose and what it got."""
        state = self.new_state()
        pending = _Observations(self.telemetry)
        record = _Recorder(name, estimates=isinstance(policy, DynamicSplit))
        probes = 0
        for now in self._starts(record):
            pending.deliver(policy, now)
            decision = policy.choose(now)
            probes += self._maybe_probe(policy, state, pending, now)
            outcome = state.run(
                decision.k,
                now,
                policy.deadline_ms(decision),
                codec=decision.codec,
                race=decision.race,
            )
            self._observe(pending, outcome, raced=decision.race)
            rate, predicted = None, None
            if isinstance(policy, DynamicSplit):
                rate = policy.uplink.smoothed_rate()
                predicted = policy.last_rate_bps
            record.add(outcome, rate, predicted)
        return record.finish(probes)

    def run_oracle(self, name: str = "oracle") -> StrategyRun:
        """For each request, the split that actually finished first from the current state.

        It knows the outcome, so it never waits for a late result: a split whose result would
        be late loses to running locally, and no fallback is needed.
        """
        state = self.new_state()
        record = _Recorder(name)
        for now in self._starts(record):
            best: tuple[Outcome, DeviceState] | None = None
            for k, codec in self.device.admissible_pairs():
                trial = state.copy()
                outcome = trial.run(k, now, None, codec=codec)
                if best is None or outcome.done_s < best[0].done_s:
                    best = (outcome, trial)
            assert best is not None
            outcome, state = best
            record.add(outcome, None)
        return record.finish(0)

    def _starts(self, record: _Recorder) -> Iterator[float]:
        """Start times of the requests. Pipelined: the arrivals. Sequential (the live device
        node): a request starts at its slot or when the previous one finished, and the next
        slot is a period after the later of the two (`DeviceNode.run`'s schedule)."""
        if self.settings.pipelined:
            for t in self.arrivals:
                yield float(t)
            return
        periodic = self.settings.arrivals == "periodic"
        period = 1 / self.settings.rate_hz
        slot = float(self.arrivals[0]) if self.arrivals.size else self.settings.duration_s
        index = 0
        while slot < self.settings.duration_s:
            start = max(slot, record.last_done_s)
            if start >= self.settings.duration_s:
                return
            yield start
            index += 1
            if periodic:
                slot = max(slot + period, start)
            elif index < self.arrivals.size:
                slot = float(self.arrivals[index])
            else:
                return

    @staticmethod
    def _maybe_probe(
        policy: SplitPolicy, state: DeviceState, pending: _Observations, now: float
    ) -> int:
        size = policy.probe_bytes(now)
        if size <= 0:
            return 0
        delivery = state.probe(size, now)
        pending.at(delivery.handed_s, "on_uplink_sent", size)
        pending.at(delivery.acked_s, "on_uplink_sample", size, delivery.sample_s)
        return 1

    def _observe(self, pending: _Observations, outcome: Outcome, *, raced: bool) -> None:
        pending.at(outcome.head_end_s, "on_device_time", outcome.k, outcome.device_ms)
        delivery = outcome.delivery
        if delivery is not None:
            pending.at(delivery.handed_s, "on_uplink_sent", outcome.payload_bytes)
            pending.at(
                delivery.acked_s, "on_uplink_sample", outcome.payload_bytes, delivery.sample_s
            )
        waited = outcome.fallback and not raced  # the tail ran here after the deadline
        tail = outcome.compute_ms - outcome.device_ms if waited else 0.0
        pending.at(
            outcome.done_s,
            "on_result",
            outcome.k,
            outcome.offloaded,
            outcome.latency_ms,
            local_tail_ms=tail,
        )

    def evaluate_each_split(self, state: DeviceState, now: float) -> dict[int, float]:
        """Latency (ms) of a request at each split from `state` (the oracle's view)."""
        return {
            k: min(state.copy().run(k, now, None, codec=c).latency_ms for c in codecs)
            for k, codecs in self.device.admissible_codecs().items()
        }
