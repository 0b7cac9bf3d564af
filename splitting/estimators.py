"""What the device knows, estimated from what it observes: uplink rate, server load, head times.

Every estimator takes the time as an argument (seconds on a monotonic clock) and never reads a
clock, so the live device node, the trace simulator and the tests drive the same objects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from splitting.errors import SplittingError
from splitting.traces import DEFAULT_ONE_WAY_MS, wire_bytes

#: How fast an unmeasured link's rate drifts: variance of log(rate) gained per second without a
#: sample. A second's age adds nearly nothing; half a minute doubles a typical cellular spread.
DEFAULT_LINK_DRIFT_PER_S = 0.02

#: A sample's transfer time is at least this: the resolution of a 1-ms trace (and of clocks),
#: so that a message whose time is all RTT cannot claim an infinite rate.
MIN_TRANSFER_S = 0.001


class EstimatorError(SplittingError):
    """An observation that no estimator can make sense of (negative bytes or durations)."""


def ewma(previous: float | None, sample: float, weight: float) -> float:
    """Exponentially weighted moving average: `sample` weighs `weight`, the history the rest;
    the first sample (`previous` None) starts the average. The device's head times and the
    worker's service times are smoothed the same way."""
    return sample if previous is None else previous + weight * (sample - previous)


def decay(elapsed_s: float, half_life_s: float) -> float:
    """The weight left to what was observed `elapsed_s` ago, halving every `half_life_s`."""
    return 0.5 ** (max(0.0, elapsed_s) / half_life_s)


# -- uplink rate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkEstimate:
    """The uplink as the device believes it is now.

    `rate_bps` is in stream bytes per second (None: never measured); `rtt_s` the base round
    trip; `backlog_bytes` what is handed over and not yet acknowledged; `oldest_in_flight_s`
    how long the oldest unacknowledged publish has been in flight; `age_s` the time since the
    last sample; `stalled` says the in-flight cap lowered the rate (an outage is likely).
    """

    rate_bps: float | None
    rtt_s: float
    backlog_bytes: int = 0
    oldest_in_flight_s: float = 0.0
    age_s: float = math.inf
    stalled: bool = False
    spread: float = 0.0

    def transfer_s(self, nbytes: int) -> float:
        """Expected hand-over to arrival at the broker for `nbytes` more stream bytes: the
        backlog ahead, the bytes themselves, and the one-way delay."""
        if self.rate_bps is None or self.rate_bps <= 0:
            return math.inf
        return (self.backlog_bytes + nbytes) / self.rate_bps + self.rtt_s / 2


@dataclass
class _Sent:
    wire: int
    at: float
    predicted_bps: float | None = None  # the estimate when it was handed over


class PredictionErrors:
    """How far the estimator's own predictions were from what the next transfer achieved:
    decayed, byte-weighted mean and spread of log(achieved / predicted rate). The mean is the
    estimator's bias (a harmonic mean of a bursty link runs low), the spread is how uncertain
    the next transfer is, which is what an expected-latency decision needs."""

    def __init__(self, *, half_life_s: float, min_weight_bytes: float) -> None:
        self.half_life_s = half_life_s
        self.min_weight_bytes = min_weight_bytes
        self._weight = 0.0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._at: float | None = None
        self.count = 0

    def add(self, log_error: float, weight: float, now: float) -> None:
        if self._at is not None and now > self._at:
            factor = decay(now - self._at, self.half_life_s)
            self._weight *= factor
            self._sum *= factor
            self._sum_sq *= factor
        self._at = now if self._at is None else max(self._at, now)
        self._weight += weight
        self._sum += weight * log_error
        self._sum_sq += weight * log_error * log_error
        self.count += 1

    @property
    def known(self) -> bool:
        return self._weight >= self.min_weight_bytes

    def bias(self) -> float:
        return self._sum / self._weight if self.known else 0.0

    def spread(self) -> float | None:
        if not self.known:
            return None
        mean = self._sum / self._weight
        return math.sqrt(max(0.0, self._sum_sq / self._weight - mean * mean))


class UplinkEstimator:
    """Uplink rate from the device's own publishes: hand-over to PUBACK of each frame or probe.

    A sample of B stream bytes taking T seconds says the link moved B bytes in T - RTT. Samples
    are combined as decayed sums (bytes over transfer seconds, a harmonic mean of rates weighted
    by bytes): a small message whose time is mostly RTT moves few bytes and so weighs little,
    and the result is the rate that predicts transfer *time*, which is what latency needs.
    `mode="last"` keeps only the last sample (what a naive chooser does).

    A publish still unacknowledged after longer than the estimate allows caps the rate at what
    it has achieved so far, so an outage shows within one expected transfer time rather than
    when its PUBACK finally arrives.
    """

    def __init__(
        self,
        *,
        rtt_s: float = 2 * DEFAULT_ONE_WAY_MS / 1000,
        half_life_s: float = 2.0,
        mode: str = "decayed",
        max_sample_s: float = 2.0,
        forget_in_flight_s: float = 60.0,
        correct_bias: bool = False,
        error_half_life_s: float = 30.0,
        drift_per_s: float = DEFAULT_LINK_DRIFT_PER_S,
    ) -> None:
        if rtt_s < 0 or half_life_s <= 0 or max_sample_s <= 0 or drift_per_s < 0:
            raise EstimatorError("rtt and drift must be >= 0, half-life and max sample time > 0")
        if mode not in ("decayed", "last"):
            raise EstimatorError(f"unknown uplink estimator mode {mode!r} (decayed, last)")
        self.rtt_prior_s = rtt_s
        self.rtt_s = rtt_s
        self.half_life_s = half_life_s
        self.mode = mode
        # One sample's transfer time is capped so that a publish stuck in an outage does not
        # dominate the decayed sums for longer than the outage lasted.
        self.max_sample_s = max_sample_s
        self.forget_in_flight_s = forget_in_flight_s
        self.drift_per_s = drift_per_s
        self._bytes = 0.0  # decayed sum of sampled stream bytes
        self._seconds = 0.0  # decayed sum of their transfer times
        self._log_rate = 0.0  # decayed byte-weighted sums of log(rate) and its square
        self._log_rate_sq = 0.0
        self._at: float | None = None  # time of the sums
        self._last_rate: float | None = None
        self._in_flight: deque[_Sent] = deque()
        self.samples = 0
        # Shifting the rate by the mean error helps on a stationary bursty link and overshoots
        # after every change of rate (the errors then measure the estimator's lag), so it is
        # off by default; the errors' spread is always used as the estimate's uncertainty.
        self.correct_bias = correct_bias and mode == "decayed"
        # Trusted once about ten split-0 frames' worth of bytes were predicted.
        self.errors = PredictionErrors(half_life_s=error_half_life_s, min_weight_bytes=300_000)

    # observations

    def on_sent(self, payload_bytes: int, now: float) -> None:
        if payload_bytes < 0:
            raise EstimatorError(f"sent bytes must be >= 0, got {payload_bytes}")
        self._in_flight.append(_Sent(wire_bytes(payload_bytes), now, self.predicted_rate()))

    def on_sample(self, payload_bytes: int, seconds: float, now: float) -> None:
        if payload_bytes < 0 or seconds < 0 or not math.isfinite(seconds):
            raise EstimatorError(f"bad uplink sample: {payload_bytes} bytes in {seconds} s")
        wire = wire_bytes(payload_bytes)
        sent = self._retire(now - seconds)
        # The fastest sample bounds the base RTT from above: learn it when the prior is high.
        self.rtt_s = min(self.rtt_s, seconds)
        transfer = min(max(seconds - self.rtt_s, MIN_TRANSFER_S), self.max_sample_s)
        rate = wire / transfer
        if sent is not None and sent.predicted_bps:
            self.errors.add(math.log(rate / sent.predicted_bps), wire, now)
        self._last_rate = rate
        self.samples += 1
        self._decay_to(now)
        self._bytes += wire
        self._seconds += transfer
        self._log_rate += wire * math.log(rate)
        self._log_rate_sq += wire * math.log(rate) ** 2

    def _retire(self, sent_at: float) -> _Sent | None:
        """Drop the in-flight record this sample acknowledges (publishes are acked in order),
        and any older one whose sample never came (a publish lost to a disconnect); return the
        acknowledged one."""
        last = None
        while self._in_flight and self._in_flight[0].at <= sent_at + 1e-3:
            last = self._in_flight.popleft()
        return last

    def _expire(self, now: float) -> None:
        while self._in_flight and now - self._in_flight[0].at > self.forget_in_flight_s:
            self._in_flight.popleft()

    def _decay_to(self, now: float) -> None:
        if self._at is not None and now > self._at:
            factor = decay(now - self._at, self.half_life_s)
            self._bytes *= factor
            self._seconds *= factor
            self._log_rate *= factor
            self._log_rate_sq *= factor
        self._at = now if self._at is None else max(self._at, now)

    # estimate

    def smoothed_rate(self) -> float | None:
        """The rate from samples alone (bytes/s), before the in-flight cap."""
        if self.mode == "last":
            return self._last_rate
        if self._seconds <= 0 or self._bytes <= 0:
            return None
        return self._bytes / self._seconds

    def predicted_rate(self) -> float | None:
        """The smoothed rate; with `correct_bias`, shifted by the mean log error of its past
        predictions (the median guess of what the next transfer achieves)."""
        rate = self.smoothed_rate()
        if rate is None or not self.correct_bias:
            return rate
        return rate * math.exp(self.errors.bias())

    def spread(self) -> float:
        """How much the next transfer may differ from the estimate (std of log rate): the
        spread of the estimator's own past prediction errors once enough are known, before
        that the dispersion of the recent samples."""
        measured = self.errors.spread() if self.mode == "decayed" else None
        if measured is not None:
            return measured
        if self._bytes <= 0:
            return 0.0
        mean = self._log_rate / self._bytes
        return math.sqrt(max(0.0, self._log_rate_sq / self._bytes - mean * mean))

    def last_sample_at(self) -> float | None:
        return self._at

    def in_flight(self) -> int:
        return len(self._in_flight)

    def estimate(self, now: float) -> LinkEstimate:
        self._expire(now)
        rate = self.predicted_rate()
        backlog = sum(s.wire for s in self._in_flight)
        oldest = now - self._in_flight[0].at if self._in_flight else 0.0
        stalled = False
        if rate is not None and self._in_flight and self.mode == "decayed":
            head = self._in_flight[0]
            moving = now - head.at - self.rtt_s
            if moving > head.wire / rate:
                # It has been in flight longer than the estimate allows: the link is slower.
                rate = head.wire / moving
                stalled = True
        age = math.inf if self._at is None else max(0.0, now - self._at)
        # What is in flight has partly crossed already; count what the rate says is left.
        if rate is not None and self._in_flight:
            backlog = max(0, int(backlog - oldest * rate))
        return LinkEstimate(
            rate_bps=rate,
            rtt_s=self.rtt_s,
            backlog_bytes=backlog,
            oldest_in_flight_s=oldest,
            age_s=age,
            stalled=stalled,
            # An old rate is an uncertain one: the link drifts while nothing measures it.
            spread=math.sqrt(self.spread() ** 2 + self.drift_per_s * min(age, 3600.0)),
        )


class Prober:
    """When to spend uplink bytes on a probe: only when the device's own traffic is silent.

    A device that runs locally sends nothing, so its rate estimate never changes and a chooser
    that believed the link dead would stay local forever. After `quiet_s` without an uplink
    sample, and with nothing of ours in flight, send a probe of `size` bytes (at most one every
    `interval_s`); the broker's PUBACK times it like any publish.
    """

    def __init__(self, *, size: int = 6000, quiet_s: float = 1.0, interval_s: float = 1.0) -> None:
        if size < 0 or quiet_s < 0 or interval_s < 0:
            raise EstimatorError("probe size and intervals must be >= 0")
        self.size = size
        self.quiet_s = quiet_s
        self.interval_s = interval_s
        self._last_probe: float | None = None
        self.probes = 0

    def probe_bytes(self, uplink: UplinkEstimator, now: float) -> int:
        if self.size == 0 or uplink.in_flight() > 0:
            return 0
        last_sample = uplink.last_sample_at()
        if last_sample is not None and now - last_sample < self.quiet_s:
            return 0
        if self._last_probe is not None and now - self._last_probe < self.interval_s:
            return 0
        self._last_probe = now
        self.probes += 1
        return self.size


# -- server load ------------------------------------------------------------------------------


class TelemetryLike(Protocol):
    """The fields of schemas.messages.TelemetryMessage the chooser reads."""

    @property
    def interval_s(self) -> float: ...
    @property
    def models(self) -> Mapping[str, Sequence[int]]: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def batch_size(self) -> float: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def utilization(self) -> float: ...
    @property
    def service_ms(self) -> Mapping[str, Mapping[int, float]]: ...


@dataclass(frozen=True)
class ServerSnapshot:
    """One worker's load as last reported, with its age at the time of asking."""

    worker_id: str
    queue_depth: int
    in_flight: int
    batch_size: float
    max_batch: int
    utilization: float
    service_ms: dict[int, float]
    splits: frozenset[int]
    age_s: float
    direct: bool = False  # takes requests on its own topic: a device can pick it


class ServerView:
    """The workers serving a model, from their telemetry; stale telemetry is aged out.

    A worker whose last telemetry is older than `max(stale_after_s, stale_intervals *
    interval_s)`, or that was reported gone (`telemetry=None`: its status went offline or its
    retained telemetry was cleared), is not there: with no worker left, nothing is offloaded.
    """

    def __init__(self, model: str, *, stale_after_s: float = 3.0, stale_intervals: float = 3.0):
        if stale_after_s <= 0 or stale_intervals <= 0:
            raise EstimatorError("staleness limits must be > 0")
        self.model = model
        self.stale_after_s = stale_after_s
        self.stale_intervals = stale_intervals
        self._latest: dict[str, tuple[TelemetryLike, float]] = {}

    def on_telemetry(self, worker_id: str, telemetry: TelemetryLike | None, now: float) -> None:
        if telemetry is None:
            self._latest.pop(worker_id, None)
        else:
            self._latest[worker_id] = (telemetry, now)

    def latest_at(self) -> float | None:
        """When the most recent telemetry (of any worker) was received."""
        return max((received for _, received in self._latest.values()), default=None)

    def limit_s(self, telemetry: TelemetryLike) -> float:
        return max(self.stale_after_s, self.stale_intervals * float(telemetry.interval_s))

    def fresh(self, now: float) -> list[ServerSnapshot]:
        """Workers with fresh telemetry that serve this model, least loaded first."""
        snapshots = []
        for worker_id, (telemetry, received) in sorted(self._latest.items()):
            age = max(0.0, now - received)
            if age > self.limit_s(telemetry):
                continue
            splits = telemetry.models.get(self.model)
            if not splits:
                continue
            service = telemetry.service_ms.get(self.model, {})
            snapshots.append(
                ServerSnapshot(
                    worker_id=worker_id,
                    queue_depth=int(telemetry.queue_depth),
                    in_flight=int(telemetry.in_flight),
                    batch_size=float(telemetry.batch_size),
                    max_batch=int(telemetry.max_batch),
                    utilization=float(telemetry.utilization),
                    service_ms={int(k): float(v) for k, v in service.items()},
                    splits=frozenset(int(k) for k in splits),
                    age_s=age,
                    direct=bool(getattr(telemetry, "direct", False)),
                )
            )
        return sorted(snapshots, key=lambda s: (s.queue_depth, s.worker_id))


# -- surprises ------------------------------------------------------------------------------


class OffloadFeedback:
    """What the device's own offloads say about its predictions.

    Every offloaded request's latency (fallbacks included: they are what choosing to offload
    cost) is compared with the prediction it was chosen on.

    - Bias: a decayed mean of (actual - predicted), shrunk toward 0 by `prior_weight` pseudo
      results. Offloads are chosen when their prediction is low, and on a volatile link a low
      prediction is too often luck: this is the winner's curse, and the bias measures it. It
      decays with `bias_half_life_s`, so a device that stopped offloading tries again.
    - Surprise: telemetry is up to an interval old, so when the worker's load jumps the device
      learns it from its own late results first. A result later than predicted by more than
      `max(min_excess_ms, rel_excess * predicted)` adds its excess to the expected wait until
      telemetry received after it (which shows the new load) or `hold_s` passes. One late
      result alone is as likely a one-off (two devices' requests meeting in the queue) as a
      lasting jump, so it counts half; a second one within `hold_s` counts whole.
    """

    def __init__(
        self,
        *,
        min_excess_ms: float = 25.0,
        rel_excess: float = 0.5,
        hold_s: float = 2.0,
        bias_half_life_s: float = 60.0,
        prior_weight: float = 2.0,
        bias: bool = True,
    ) -> None:
        if min_excess_ms < 0 or rel_excess < 0 or hold_s <= 0:
            raise EstimatorError("feedback thresholds must be >= 0 and hold > 0 s")
        if bias_half_life_s <= 0 or prior_weight < 0:
            raise EstimatorError("bias half-life must be > 0 and prior weight >= 0")
        self.min_excess_ms = min_excess_ms
        self.rel_excess = rel_excess
        self.hold_s = hold_s
        self.bias_half_life_s = bias_half_life_s
        self.prior_weight = prior_weight
        self.learn_bias = bias
        self._predicted: dict[float, float] = {}  # request start -> predicted ms
        self._excess_ms = 0.0
        self._since: float | None = None
        self._residual_sum = 0.0  # decayed sums of (actual - predicted) and of weights
        self._weight = 0.0
        self._bias_at: float | None = None

    def on_offload(self, started: float, predicted_ms: float) -> None:
        if math.isfinite(predicted_ms):
            self._predicted[started] = predicted_ms

    def on_result(self, latency_ms: float, now: float, *, excused_ms: float = 0.0) -> None:
        """An offload's latency; `excused_ms` of it is the device's own (its head's overrun,
        the tail it ran after a failed offload), which the device times learn, and counts
        neither in the bias nor in the surprise.

        One result moves the bias by at most its own prediction: a single cold or stalled
        reply is a surprise for `hold_s`, not a belief for minutes."""
        started = now - latency_ms / 1000
        match = min(self._predicted, key=lambda t: abs(t - started), default=None)
        if match is None or abs(match - started) > 0.005:
            return
        predicted = self._predicted.pop(match)
        for old in [t for t in self._predicted if t < match - 60]:
            del self._predicted[old]  # results that never came
        excess = latency_ms - excused_ms - predicted
        self._decay_to(now)
        self._residual_sum += min(excess, max(predicted, self.min_excess_ms))
        self._weight += 1.0
        if excess > max(self.min_excess_ms, self.rel_excess * predicted):
            repeated = self.active(now, None)
            weighed = excess if repeated else excess / 2
            self._excess_ms = max(weighed, self._excess_ms if repeated else 0.0)
            self._since = now

    def _decay_to(self, now: float) -> None:
        if self._bias_at is not None and now > self._bias_at:
            factor = decay(now - self._bias_at, self.bias_half_life_s)
            self._residual_sum *= factor
            self._weight *= factor
        self._bias_at = now if self._bias_at is None else max(self._bias_at, now)

    def bias_ms(self, now: float) -> float:
        """How much later than predicted offloads have been finishing lately."""
        if not self.learn_bias or self._bias_at is None:
            return 0.0
        factor = decay(now - self._bias_at, self.bias_half_life_s)
        return self._residual_sum * factor / (self._weight * factor + self.prior_weight)

    def active(self, now: float, telemetry_at: float | None) -> bool:
        if self._since is None or now - self._since > self.hold_s:
            return False
        return telemetry_at is None or telemetry_at <= self._since

    def penalty_ms(self, now: float, telemetry_at: float | None) -> float:
        """Extra expected time for an offload now (may be negative: predictions too high).
        The late results behind a surprise also raised the bias: the larger of the two counts,
        not their sum, so one result's excess is not paid twice."""
        surprise = self._excess_ms if self.active(now, telemetry_at) else 0.0
        bias = self.bias_ms(now)
        return bias + max(0.0, surprise - max(0.0, bias))


# -- beliefs that age -------------------------------------------------------------------------


class Belief:
    """A learned number that returns to its prior as its evidence ages.

    Samples are smoothed (EWMA with `weight`); the value at a later time is the prior plus
    the smoothed samples' difference from it, shrunk by half every `half_life_s` since the last
    sample. So what was learned from one slow run fades by itself, even if the option it made
    look slow is never taken again, and fresh evidence always dominates.
    """

    def __init__(self, *, weight: float = 0.2, half_life_s: float = 30.0) -> None:
        self.check(weight, half_life_s)
        self.weight = weight
        self.half_life_s = half_life_s
        self._smoothed: float | None = None
        self._at: float | None = None

    @staticmethod
    def check(weight: float, half_life_s: float) -> None:
        if not 0 < weight <= 1:
            raise EstimatorError(f"EWMA weight must be in (0, 1], got {weight}")
        if half_life_s <= 0:
            raise EstimatorError(f"half-life must be > 0 s, got {half_life_s}")

    def observe(self, sample: float, now: float, prior: float) -> None:
        """Learn `sample`; what is left of earlier samples is first aged toward `prior`."""
        if not math.isfinite(sample):
            raise EstimatorError(f"a belief cannot learn {sample}")
        current = self.value(prior, now) if self._smoothed is not None else None
        self._smoothed = ewma(current, sample, self.weight)
        self._at = now if self._at is None else max(self._at, now)

    def evidence(self, now: float) -> float:
        """How much of the value is still learned (1: just observed, 0: all prior)."""
        if self._at is None:
            return 0.0
        return decay(now - self._at, self.half_life_s)

    def value(self, prior: float, now: float) -> float:
        if self._smoothed is None:
            return prior
        return prior + self.evidence(now) * (self._smoothed - prior)

    def learned(self) -> float | None:
        """The smoothed samples, unaged (None: nothing learned)."""
        return self._smoothed


# -- device head times ------------------------------------------------------------------------


class DeviceTimes:
    """Measured head(k)+encode times per split, each a `Belief` that ages toward its prior
    (the profile's time, scaled by what the device measured lately at any split)."""

    def __init__(self, *, weight: float = 0.2, half_life_s: float = 30.0) -> None:
        Belief.check(weight, half_life_s)
        self.weight = weight
        self.half_life_s = half_life_s
        self._beliefs: dict[int, Belief] = {}

    def on_measured(
        self, k: int, ms: float, now: float = 0.0, prior_ms: float | None = None
    ) -> None:
        if ms < 0 or not math.isfinite(ms):
            raise EstimatorError(f"bad device time {ms} ms for split {k}")
        belief = self._beliefs.setdefault(
            k, Belief(weight=self.weight, half_life_s=self.half_life_s)
        )
        belief.observe(ms, now, ms if prior_ms is None else prior_ms)

    def get(self, k: int) -> float | None:
        """The smoothed measurements at k, unaged (None until measured)."""
        belief = self._beliefs.get(k)
        return belief.learned() if belief is not None else None

    def estimate(self, k: int, prior_ms: float, now: float) -> float:
        """Split k's time now: the measurements, aged toward `prior_ms`."""
        belief = self._beliefs.get(k)
        return belief.value(prior_ms, now) if belief is not None else prior_ms
