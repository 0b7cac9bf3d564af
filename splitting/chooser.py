"""The split chooser: a pure function from what the device knows to the split of one request.

`choose(inputs)` takes the device profile, the link and server estimates and the parameters,
and returns a `Decision`: the candidate split with the lowest expected latency, kept on the
previous split while that one is within the hysteresis band. An offload's expected latency
averages over the uplink's uncertainty (the transfer time log-normal around its prediction,
with the spread the estimator measured of its own errors) and counts what a slow transfer
costs: the fallback deadline and the local tail after it, or, when racing, the device's own
tail that finishes first. The live device node, the trace
simulator and the tests call this same function through `splitting.policy.DynamicSplit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from splitting.errors import SplittingError
from splitting.estimators import LinkEstimate
from splitting.latency import Breakdown, DeviceProfile, ServerEstimate, predict


@dataclass(frozen=True)
class Decision:
    """The split chosen for one request (re-exported by `splitting.policy`).

    `k` is the split index (0 = send the input, n = run everything locally). `predicted_ms`
    holds the latency model's estimate per split (every k = 0..n for the dynamic chooser,
    empty for fixed policies); the chooser only picks among the profile's candidates.
    """

    k: int
    reason: str
    predicted_ms: dict[int, float] = field(default_factory=dict)
    codec: str | None = None  # None: the device's configured codec
    race: bool = False  # also run tail(k) on the device; the first result wins
    uplink_bps: float | None = None  # the uplink rate the decision assumed (None: unmeasured)
    device_ms: float | None = None  # the predicted head + encode of the chosen split

    @property
    def expected_ms(self) -> float | None:
        return self.predicted_ms.get(self.k)


class ChooserError(SplittingError):
    """Chooser parameters that make no sense."""


@dataclass(frozen=True)
class FallbackRule:
    """How long the device waits for the server before running tail(k) locally.

    deadline = min(cap_ms, factor * predicted offload latency + margin_ms); `cap_ms` when there
    is no prediction. A late result is dropped. The simulator applies the same rule.
    """

    factor: float = 2.0
    margin_ms: float = 60.0
    cap_ms: float = 1500.0

    def __post_init__(self) -> None:
        if self.factor < 1 or self.margin_ms < 0 or self.cap_ms <= 0:
            raise ChooserError("fallback needs factor >= 1, margin >= 0 ms and cap > 0 ms")

    def deadline_ms(self, predicted_ms: float | None) -> float:
        if predicted_ms is None or not math.isfinite(predicted_ms):
            return self.cap_ms
        return min(self.cap_ms, self.factor * predicted_ms + self.margin_ms)


@dataclass(frozen=True)
class ChooserParams:
    """How the chooser weighs uncertain predictions.

    `hysteresis`: keep the previous split while its prediction is within this fraction of the
    best (avoids flapping between near-equal splits on noisy estimates). `offload_margin_ms`:
    an offload must beat running locally by this much. `risk`: an offload's score adds
    risk * spread * (its uplink time), where spread is the recent dispersion of log(rate):
    on a volatile link a prediction is less certain, and running locally is certain.
    """

    hysteresis: float = 0.0
    offload_margin_ms: float = 0.0
    risk: float = 0.0
    expected: bool = True  # score offloads by expected latency (False: the point prediction)

    def __post_init__(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise ChooserError(f"hysteresis must be in [0, 1), got {self.hysteresis}")
        if self.offload_margin_ms < 0 or self.risk < 0:
            raise ChooserError("offload margin and risk must be >= 0")


@dataclass(frozen=True)
class ChooserInputs:
    device: DeviceProfile
    link: LinkEstimate | None
    server: ServerEstimate | None
    params: ChooserParams = ChooserParams()
    previous_k: int | None = None
    device_ms: Mapping[int, float] = field(default_factory=dict)
    fallback: FallbackRule = FallbackRule()
    racing: bool = False  # the device runs tail(k) itself too; the first result wins


def predictions(inputs: ChooserInputs) -> dict[int, Breakdown]:
    """The latency model at every split 0..n under its best admissible codec (the chooser only
    picks among candidates)."""
    return {k: best_option(k, inputs) for k in range(inputs.device.n + 1)}


def best_option(k: int, inputs: ChooserInputs) -> Breakdown:
    """Split k under the admissible codec with the lowest predicted latency: fewer bytes win
    on a slow link, cheaper codec times on a fast one."""
    parts = [
        predict(k, inputs.device, inputs.link, inputs.server, device_ms=inputs.device_ms, cost=cost)
        for cost in inputs.device.options_at(k)
    ]
    if not parts:  # no codec passes the agreement floor here
        return Breakdown(k=k, device_ms=inputs.device.costs[k].device_ms, uplink_ms=math.inf)
    return min(parts, key=lambda b: b.total_ms)


def chance_of_losing(part: Breakdown, local_ms: float, spread: float) -> float:
    """Chance that an offload predicted as `part` finishes after `local_ms`, with the uplink
    rate log-normal around its estimate (std `spread` of log rate), the rest as predicted."""
    if not math.isfinite(part.total_ms):
        return 1.0
    rest = part.total_ms - part.uplink_ms
    if part.uplink_ms <= 0:
        return 1.0 if rest > local_ms else 0.0
    slack = (local_ms - rest) / part.uplink_ms  # the uplink may take this many times its estimate
    if slack <= 0:
        return 1.0
    if spread <= 0:
        return 1.0 if slack < 1 else 0.0
    return 0.5 * math.erfc(math.log(slack) / spread / math.sqrt(2))


def choose(inputs: ChooserInputs) -> Decision:
    """The candidate split with the lowest predicted latency (see the module docstring)."""
    device = inputs.device
    parts = predictions(inputs)
    predicted = {k: b.total_ms for k, b in parts.items()}
    local = device.n
    if inputs.server is None:
        return Decision(k=local, reason="no worker", predicted_ms=predicted)
    if inputs.link is None or inputs.link.rate_bps is None:
        return Decision(k=local, reason="uplink unmeasured", predicted_ms=predicted)
    score = {k: _score(parts[k], local, inputs) for k in device.candidates}
    best = min(device.candidates, key=lambda k: (score[k], k))
    reason = "stalled uplink" if inputs.link.stalled and best == local else "lowest predicted"
    previous = inputs.previous_k
    if (
        previous is not None
        and previous != best
        and previous in device.candidates
        and math.isfinite(predicted[previous])
        and score[previous] <= score[best] * (1 + inputs.params.hysteresis)
    ):
        return _decision(previous, "hysteresis", parts, predicted)
    return _decision(best, reason, parts, predicted)


def _decision(
    k: int, reason: str, parts: Mapping[int, Breakdown], predicted: dict[int, float]
) -> Decision:
    return Decision(
        k=k,
        reason=reason,
        predicted_ms=predicted,
        codec=parts[k].codec or None,
        device_ms=parts[k].device_ms,
    )


def _score(part: Breakdown, local: int, inputs: ChooserInputs) -> float:
    """Expected (or predicted) latency plus the price of uncertainty (offloads only)."""
    if part.k == local or not math.isfinite(part.total_ms):
        return part.total_ms
    params = inputs.params
    spread = inputs.link.spread if inputs.link is not None else 0.0
    price = params.offload_margin_ms + params.risk * spread * part.uplink_ms
    if not params.expected:
        return part.total_ms + price
    tail_ms = local_tail_ms(part.k, inputs)
    device = inputs.device
    overlap = device.cost(part.k, part.codec or None).encode_ms if device.cores >= 2 else 0.0
    return price + expected_ms(
        part,
        spread=spread,
        tail_ms=tail_ms,
        deadline_ms=None if inputs.racing else inputs.fallback.deadline_ms(part.total_ms),
        overlap_ms=overlap,
    )


def local_tail_ms(k: int, inputs: ChooserInputs) -> float:
    """What finishing the request here costs once head(k) ran: the local run minus the head."""
    device = inputs.device
    local = inputs.device_ms.get(device.n, device.costs[device.n].device_ms)
    head = inputs.device_ms.get(k, device.costs[k].device_ms) - device.costs[k].encode_ms
    return max(0.0, local - max(0.0, head))


# Gauss-Hermite nodes for a standard normal: expectations over the uplink's log-normal error.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def expected_ms(
    part: Breakdown,
    *,
    spread: float,
    tail_ms: float,
    deadline_ms: float | None,
    overlap_ms: float = 0.0,
) -> float:
    """Expected latency of the offload `part` when its uplink time is log-normal with the
    predicted mean (std `spread` of log rate). With `deadline_ms`, an answer later than that is
    replaced by the deadline plus `tail_ms` run here (the fallback); without one (racing), the
    request ends when the first of the offload and the device's own tail finishes, the tail
    starting `overlap_ms` before the encode ends on a device that encodes on another core."""
    rest = part.total_ms - part.uplink_ms
    # Mean-preserving: the estimator's rate (decayed bytes over seconds) already predicts the
    # mean transfer time, so the spread widens the distribution around it without moving it.
    latencies = rest + part.uplink_ms * np.exp(spread * _NODES - spread * spread / 2)
    if deadline_ms is None:
        latencies = np.minimum(latencies, part.device_ms - overlap_ms + tail_ms)
    else:
        latencies = np.where(latencies > deadline_ms, deadline_ms + tail_ms, latencies)
    return float(np.dot(_WEIGHTS, latencies))
