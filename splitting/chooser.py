"""The split chooser: a pure function from what the device knows to the split of one request.

`choose(inputs)` takes the device profile, the link and server estimates and the parameters,
and returns a `Decision`: the candidate split with the lowest predicted latency, kept on the
previous split while that one is within the hysteresis band. The live device node, the trace
simulator and the tests call this same function through `splitting.policy.DynamicSplit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

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


def predictions(inputs: ChooserInputs) -> dict[int, Breakdown]:
    """The latency model at every split 0..n (the chooser only picks among candidates)."""
    return {
        k: predict(k, inputs.device, inputs.link, inputs.server, device_ms=inputs.device_ms)
        for k in range(inputs.device.n + 1)
    }


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
        return Decision(k=previous, reason="hysteresis", predicted_ms=predicted)
    return Decision(k=best, reason=reason, predicted_ms=predicted)


def _score(part: Breakdown, local: int, inputs: ChooserInputs) -> float:
    """Predicted latency plus the price of uncertainty (offloads only)."""
    if part.k == local or not math.isfinite(part.total_ms):
        return part.total_ms
    params = inputs.params
    spread = inputs.link.spread if inputs.link is not None else 0.0
    return part.total_ms + params.offload_margin_ms + params.risk * spread * part.uplink_ms
