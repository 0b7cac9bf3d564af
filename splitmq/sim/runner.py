"""Drive split policies through the simulated system, request by request.

A policy sees only what the live device would have seen by then: every observation (hand-over,
PUBACK, measured head time, result, telemetry) is queued at the time it happens and delivered
before the first `choose` at or after that time. The oracle instead tries every split from the
current state and keeps the one that finishes first.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.messages import TelemetryMessage
from splitmq.errors import SplitmqError
from splitmq.sim.scenarios import ServerLoad
from splitmq.sim.system import DeviceState, EdgeServer, Outcome
from splitting.latency import DeviceProfile
from splitting.policy import DynamicSplit, SplitPolicy
from splitting.server_profile import ServerProfile
from splitting.traces import DEFAULT_ONE_WAY_MS, Uplink, UplinkTrace

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
    arrivals: str = "periodic"
    seed: int = 0
    worker_id: str = "edge-sim"
    dtype: str = "fp32"
    start_s: float = 1.0
    #: Also ask the policy for a probe this long before each next arrival (None: only at
    #: arrivals), as a device node with a known frame rate can.
    probe_lead_s: float | None = None

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

    def stats(self) -> dict[str, float]:
        lat = self.latency_ms
        return {
            "mean_ms": float(np.mean(lat)),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
        }


def arrival_times(settings: SimSettings) -> np.ndarray:
    if settings.arrivals == "periodic":
        return np.arange(settings.start_s, settings.duration_s, 1 / settings.rate_hz)
    rng = np.random.default_rng(settings.seed + 1)
    count = int(settings.rate_hz * settings.duration_s * 1.2) + 10
    times = settings.start_s + np.cumsum(rng.exponential(1 / settings.rate_hz, count))
    return times[times < settings.duration_s]


class _Observations:
    """Observations waiting for their time, delivered in time order."""

    def __init__(self, telemetry: list[tuple[float, str, TelemetryMessage]]) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        for t, worker, message in telemetry:
            self.at(t, "on_telemetry", worker, message)

    def at(self, t: float, method: str, *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), _caller(method), args))

    def deliver(self, policy: SplitPolicy, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            t, _, call, args = heapq.heappop(self._heap)
            call(policy, *args, t)


def _caller(method: str) -> Callable[..., None]:
    def call(policy: SplitPolicy, *args: Any) -> None:
        getattr(policy, method)(*args)

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
        s = self.settings
        one_way = s.one_way_ms / 1000
        stream = []
        for seq, t in enumerate(np.arange(0.0, s.duration_s, s.telemetry_interval_s)):
            message = self.server.telemetry(
                float(t), seq, interval_s=s.telemetry_interval_s, worker_id=s.worker_id
            )
            stream.append((float(t) + one_way, s.worker_id, message))
        return stream

    def new_state(self) -> DeviceState:
        uplink = Uplink(self.trace, one_way_ms=self.settings.one_way_ms)
        return DeviceState(self.device, uplink, self.server)

    # -- strategies -----------------------------------------------------------------------

    def run_policy(self, name: str, policy: SplitPolicy) -> StrategyRun:
        """Run a policy over every request: what it chose and what it got."""
        state = self.new_state()
        pending = _Observations(self.telemetry)
        count = len(self.arrivals)
        ks = np.empty(count, dtype=np.int64)
        latency = np.empty(count)
        offloaded = np.zeros(count, dtype=bool)
        fallback = np.zeros(count, dtype=bool)
        estimates = np.full(count, np.nan) if isinstance(policy, DynamicSplit) else None
        probes = 0
        for i, t in enumerate(self.arrivals):
            now = float(t)
            pending.deliver(policy, now)
            decision = policy.choose(now)
            outcome = state.run(decision.k, now, policy.deadline_ms(decision))
            self._observe(pending, outcome)
            probes += self._maybe_probe(policy, state, pending, now)
            lead = self.settings.probe_lead_s
            if lead is not None and i + 1 < count and self.arrivals[i + 1] - lead > now:
                ahead = float(self.arrivals[i + 1]) - lead
                pending.deliver(policy, ahead)
                probes += self._maybe_probe(policy, state, pending, ahead)
            ks[i], latency[i] = outcome.k, outcome.latency_ms
            offloaded[i], fallback[i] = outcome.offloaded, outcome.fallback
            if estimates is not None:
                assert isinstance(policy, DynamicSplit)
                rate = policy.uplink.smoothed_rate()
                estimates[i] = np.nan if rate is None else rate
        return StrategyRun(name, self.arrivals, ks, latency, offloaded, fallback, estimates, probes)

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

    def _observe(self, pending: _Observations, outcome: Outcome) -> None:
        pending.at(outcome.head_end_s, "on_device_time", outcome.k, outcome.device_ms)
        delivery = outcome.delivery
        if delivery is not None:
            pending.at(delivery.handed_s, "on_uplink_sent", outcome.payload_bytes)
            pending.at(
                delivery.acked_s, "on_uplink_sample", outcome.payload_bytes, delivery.sample_s
            )
        pending.at(outcome.done_s, "on_result", outcome.k, outcome.offloaded, outcome.latency_ms)

    def run_oracle(self, name: str = "oracle") -> StrategyRun:
        """For each request, the split that actually finished first from the current state.

        It knows the outcome, so it never waits for a late result: a split whose result would
        be late loses to running locally, and no fallback is needed.
        """
        state = self.new_state()
        count = len(self.arrivals)
        ks = np.empty(count, dtype=np.int64)
        latency = np.empty(count)
        offloaded = np.zeros(count, dtype=bool)
        for i, t in enumerate(self.arrivals):
            now = float(t)
            best: tuple[Outcome, DeviceState] | None = None
            for k in range(self.device.n + 1):
                trial = state.copy()
                outcome = trial.run(k, now, None)
                if best is None or outcome.done_s < best[0].done_s:
                    best = (outcome, trial)
            assert best is not None
            outcome, state = best
            ks[i], latency[i], offloaded[i] = outcome.k, outcome.latency_ms, outcome.offloaded
        return StrategyRun(name, self.arrivals, ks, latency, offloaded, np.zeros(count, bool))

    def evaluate_each_split(self, state: DeviceState, now: float) -> dict[int, float]:
        """Latency (ms) of a request at each split from `state` (the oracle's view)."""
        return {k: state.copy().run(k, now, None).latency_ms for k in range(self.device.n + 1)}
