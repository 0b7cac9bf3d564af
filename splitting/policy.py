"""Split policies: what the device node asks before each request.

A policy turns what the device has observed (uplink samples, telemetry, worker status) into a
`Decision`. The device node, the trace simulator and the tests drive the same policy objects;
time is always passed in (`now`, seconds on a monotonic clock), never read inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from splitmq_base.models import STRICT
from splitmq_base.validation import validation_report
from splitting.chooser import (
    ChooserInputs,
    ChooserParams,
    Decision,
    FallbackRule,
    best_option,
    chance_of_losing,
    choose,
)
from splitting.errors import SplitPolicyError
from splitting.estimators import (
    Belief,
    DeviceTimes,
    LinkEstimate,
    OffloadFeedback,
    Prober,
    ServerView,
    TelemetryLike,
    UplinkEstimator,
)
from splitting.exploration import Explorer
from splitting.latency import DEFAULT_MIN_AGREEMENT, DeviceProfile, estimate_server
from splitting.profiles import ModelProfile
from splitting.server_profile import ServerProfile
from splitting.traces import DEFAULT_ONE_WAY_MS

__all__ = ["Decision", "DynamicOptions", "DynamicSplit", "FixedSplit", "SplitPolicy"]

#: off: never race; always: every offload also runs tail(k) on the device; auto: only when
#: the offload may well lose to running locally.
RaceMode = Literal["off", "always", "auto"]
RACE_MODES: tuple[RaceMode, ...] = ("off", "always", "auto")

#: A split's device time teaches the device's speed only when it is at least this share of the
#: whole model's time on the device.
MIN_RATIO_SHARE = 0.1

#: Largest probe chosen automatically (a model whose input frame is larger probes with this).
MAX_AUTO_PROBE_BYTES = 32 * 1024


class SplitPolicy(Protocol):
    """What the device node needs from a policy. Observers default to no-ops in FixedSplit."""

    def choose(self, now: float) -> Decision:
        """Pick the split for a request that starts now."""
        ...

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        """A publish of `nbytes` (request frame or probe payload) was handed to the client now.

        Paired in order with `on_uplink_sample`: lets the policy notice a transmission that is
        taking far longer than expected (an outage) before its PUBACK arrives."""
        ...

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        """A publish of `nbytes` took `seconds` from hand-over to the broker's PUBACK."""
        ...

    def on_device_time(self, k: int, ms: float, now: float, *, representative: bool = True) -> None:
        """The device measured `ms` for head(k) plus encoding (k = n: the whole model).

        `representative=False`: the device knows the run was not typical (a thread that was
        never warmed, a garbage-collector pause inside it); it is not learned as the device's
        speed, but still explains the request's own latency."""
        ...

    def on_telemetry(self, worker_id: str, telemetry: TelemetryLike | None, now: float) -> None:
        """Latest telemetry of a worker (a schemas.messages.TelemetryMessage), None when gone."""
        ...

    def on_result(
        self, k: int, offloaded: bool, latency_ms: float, now: float, *, local_tail_ms: float = 0.0
    ) -> None:
        """A request finished (offloaded or run locally) after `latency_ms`; `local_tail_ms` of
        it is the tail the device ran after an offload failed (its own compute, which the
        device times learn; the server's lateness is the rest)."""
        ...

    def probe_bytes(self, now: float) -> int:
        """Bytes to send as an uplink probe now (0: no probe). Lets a local-only policy
        keep measuring the uplink."""
        ...

    def deadline_ms(self, decision: Decision) -> float | None:
        """How long after the request started (the `choose` call) the device waits for the
        server's result before it runs tail(k) locally; None: the device node's own default."""
        ...


class FixedSplit:
    """Always the same split (a baseline, and the runtime's simplest policy)."""

    def __init__(self, k: int, *, deadline_ms: float | None = None, race: bool = False) -> None:
        if k < 0:
            raise SplitPolicyError(f"split index must be >= 0, got {k}")
        if deadline_ms is not None and deadline_ms <= 0:
            raise SplitPolicyError(f"deadline must be > 0 ms, got {deadline_ms}")
        self.k = k
        self._deadline_ms = deadline_ms
        self.race = race

    def choose(self, now: float) -> Decision:
        return Decision(k=self.k, reason="fixed", race=self.race)

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        return None

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        return None

    def on_device_time(self, k: int, ms: float, now: float, *, representative: bool = True) -> None:
        return None

    def on_telemetry(self, worker_id: str, telemetry: TelemetryLike | None, now: float) -> None:
        return None

    def on_result(
        self, k: int, offloaded: bool, latency_ms: float, now: float, *, local_tail_ms: float = 0.0
    ) -> None:
        return None

    def probe_bytes(self, now: float) -> int:
        return 0

    def deadline_ms(self, decision: Decision) -> float | None:
        return self._deadline_ms


class DynamicOptions(BaseModel):
    """The tunables of `DynamicSplit`, strict and frozen: the device configuration's
    `policy.options` (kind dynamic) validates into this model, so a bad or misspelt option is
    refused with its dotted path when the file is read.

    `one_way_ms` is the prior of the base RTT (learned down); `rate_mode` / `half_life_s` shape
    the uplink estimate; `probe_*` the probes (size None: split 0's frame); `stale_after_s` is
    the telemetry age limit; `hysteresis` / `offload_margin_ms` / `risk` are `ChooserParams`;
    `feedback` / `learn_bias` / `bias_half_life_s` learn from the policy's own offloads
    (`OffloadFeedback`); `device_half_life_s` ages the measured head times toward the
    profile; `explore_after_s` / `explore_max_s` bound how long offloading goes untested
    (`Explorer`); `wait_factor` / `wait_margin_ms` are the wait rule below the configured
    deadline (`FallbackRule`); `pin` always answers that split (still estimating); `race` and
    `race_above` decide when an offload also runs tail(k) on the device.
    """

    model_config = STRICT

    one_way_ms: float = Field(DEFAULT_ONE_WAY_MS, ge=0, description="prior of the one-way delay")
    rate_mode: Literal["decayed", "last"] = "decayed"
    half_life_s: float = Field(2.0, gt=0, description="of the uplink estimate")
    load_aware: bool = True
    probe_size: int | None = Field(None, ge=0, description="None: split 0's frame")
    probe_quiet_s: float = Field(1.0, ge=0)
    probe_interval_s: float = Field(1.0, ge=0)
    stale_after_s: float = Field(3.0, gt=0, description="telemetry age limit")
    hysteresis: float = Field(0.0, ge=0, lt=1)
    offload_margin_ms: float = Field(0.0, ge=0)
    risk: float = Field(0.0, ge=0)
    feedback: bool = True
    learn_bias: bool = True
    bias_half_life_s: float = Field(60.0, gt=0)
    device_half_life_s: float = Field(30.0, gt=0, description="of measured head times")
    explore_after_s: float = Field(
        2.0, ge=0, description="re-test offloading after this long local (0: never)"
    )
    explore_max_s: float = Field(60.0, gt=0, description="longest gap between two re-tests")
    wait_factor: float = Field(2.0, ge=1, description="wait = factor x predicted + margin")
    wait_margin_ms: float = Field(60.0, ge=0)
    pin: int | None = Field(None, ge=0, description="always this split (still estimating)")
    race: RaceMode = "off"
    race_above: float = Field(0.05, ge=0, le=1, description="auto: race above this chance")

    @classmethod
    def of(cls, **options: Any) -> DynamicOptions:
        """Options from keywords; a bad one is a `SplitPolicyError` naming it."""
        try:
            return cls(**options)
        except ValidationError as exc:
            heading = "invalid DynamicSplit options:"
            report = validation_report(exc, heading, data=options, spelling="json")
            raise SplitPolicyError(report) from exc


def wait_rule(options: DynamicOptions, *, cap_ms: float | None = None) -> FallbackRule:
    """How long the device waits for the server: `wait_factor` x the predicted latency +
    `wait_margin_ms`, never beyond `cap_ms` (the configured deadline)."""
    rule = FallbackRule(factor=options.wait_factor, margin_ms=options.wait_margin_ms)
    return rule if cap_ms is None else replace(rule, cap_ms=cap_ms)


class DynamicSplit:
    """The latency-model chooser with its estimators: the device node's default policy.

    It keeps an uplink-rate estimate from the device's own publishes (probing when it has run
    locally for a while), the workers' load from their telemetry (aged out; no worker means no
    offload) and the measured head times, and asks the pure `splitting.chooser.choose` for each
    request. `pin=k` always answers k but keeps estimating, so that a fixed split gets the same
    prediction-based fallback deadline (the simulator's fixed strategies use it).
    `rate_mode="last"` with `load_aware=False` is the Neurosurgeon-style baseline.

    `options` (a `DynamicOptions`) holds its tunables; `server_profile` gives tail times by
    batch size (without one, the workers' reported service times are used and scaled),
    `fallback` the deadline rule, and `uplink` the link estimator (default: an
    `UplinkEstimator` from the options; the simulator passes one that knows the trace's past).
    `DynamicSplit.build(device, race="auto", ...)` takes the options as keywords.
    """

    def __init__(
        self,
        device: DeviceProfile,
        options: DynamicOptions | None = None,
        *,
        server_profile: ServerProfile | None = None,
        fallback: FallbackRule | None = None,
        uplink: UplinkEstimator | None = None,
    ) -> None:
        options = options if options is not None else DynamicOptions()
        pin = options.pin
        if pin is not None and not 0 <= pin <= device.n:
            raise SplitPolicyError(f"pinned split {pin} outside 0..{device.n}")
        self.options = options
        self.race = options.race
        self.race_above = options.race_above
        self.last_rate_bps: float | None = None  # the uplink rate the last decision assumed
        self.device = device
        self.server_profile = server_profile
        self.load_aware = options.load_aware
        self.params = ChooserParams(
            hysteresis=options.hysteresis,
            offload_margin_ms=options.offload_margin_ms,
            risk=options.risk,
        )
        self.fallback = fallback or wait_rule(options)
        self.pin = pin
        self.uplink = uplink or UplinkEstimator(
            rtt_s=2 * options.one_way_ms / 1000,
            half_life_s=options.half_life_s,
            mode=options.rate_mode,
        )
        probe_size = options.probe_size
        if probe_size is None:
            # Probe with what an offload would send (split 0's frame): a transfer's time is not
            # proportional to its size on a bursty link, so a smaller probe mispredicts it.
            probe_size = min(device.costs[0].payload_bytes, MAX_AUTO_PROBE_BYTES)
        self.prober = Prober(
            size=probe_size, quiet_s=options.probe_quiet_s, interval_s=options.probe_interval_s
        )
        self.server_view = ServerView(device.model, stale_after_s=options.stale_after_s)
        self.device_times = DeviceTimes(half_life_s=options.device_half_life_s)
        # measured / profiled device time, learned at every split and aged toward 1 (the
        # profile): the prior of a split's time that has no fresh measurement of its own
        self.speed_ratio = Belief(half_life_s=options.device_half_life_s)
        self.explorer = Explorer(after_s=options.explore_after_s, max_s=options.explore_max_s)
        self._head_overrun_ms = 0.0  # the current request's head beyond its prediction
        self.feedback = (
            OffloadFeedback(bias=options.learn_bias, bias_half_life_s=options.bias_half_life_s)
            if options.feedback
            else None
        )
        self._last: Decision | None = None
        self.fallbacks = 0
        self.results = 0

    @classmethod
    def build(
        cls,
        device: DeviceProfile,
        *,
        server_profile: ServerProfile | None = None,
        fallback: FallbackRule | None = None,
        uplink: UplinkEstimator | None = None,
        **options: Any,
    ) -> DynamicSplit:
        """`DynamicSplit(device, DynamicOptions(**options), ...)`, a bad option being a
        `SplitPolicyError` (for the simulator and tests, which set a few options inline)."""
        return cls(
            device,
            DynamicOptions.of(**options),
            server_profile=server_profile,
            fallback=fallback,
            uplink=uplink,
        )

    @classmethod
    def for_device(
        cls,
        *,
        profile: ModelProfile,
        codec: str | None = None,
        codecs: Sequence[str] = (),
        input_codec: str | None = None,
        min_agreement: float = DEFAULT_MIN_AGREEMENT,
        slowdown: float = 1.0,
        cores: int = 1,
        deadline_ms: float | None = None,
        server_profile: str | Path | ServerProfile | None = None,
        options: DynamicOptions | None = None,
        fallback: FallbackRule | None = None,
    ) -> DynamicSplit:
        """Build from what a device node has: its model profile, codecs (`codec` and the
        further `codecs` it may choose per request, `input_codec` at split 0), the agreement
        floor, slowdown, cores, deadline cap (the configured deadline: the fallback rule's cap
        unless `fallback` is given), optionally a server profile (path or object), and its
        options."""
        if input_codec is not None:
            profile = profile.with_codec(codec or profile.codec, input_codec)
        device = DeviceProfile.from_model_profile(
            profile,
            slowdown=slowdown,
            codec=codec,
            codecs=codecs,
            min_agreement=min_agreement,
            cores=cores,
        )
        if isinstance(server_profile, str | Path):
            server_profile = ServerProfile.load(server_profile)
        if deadline_ms is not None and fallback is None:
            fallback = wait_rule(options or DynamicOptions(), cap_ms=deadline_ms)
        return cls(device, options, server_profile=server_profile, fallback=fallback)

    # -- decisions ------------------------------------------------------------------------

    def choose(self, now: float) -> Decision:
        inputs = self.inputs(now)
        decision = choose(inputs)
        if self.pin is not None:
            decision = Decision(k=self.pin, reason="fixed", predicted_ms=decision.predicted_ms)
        elif decision.k == self.device.n and self.explorer.due(now) and _offloadable(inputs):
            decision = self._exploration(decision, inputs) or decision
        if decision.k < self.device.n and self._races(decision, inputs):
            decision = replace(decision, race=True)
        if decision.k < self.device.n:
            exploring = decision.reason == "explore"
            local_ms = decision.predicted_ms.get(self.device.n, math.inf)
            self.explorer.on_offload(now, exploring_against_ms=local_ms if exploring else None)
        self._head_overrun_ms = 0.0
        self.last_rate_bps = inputs.link.rate_bps if inputs.link is not None else None
        decision = replace(decision, uplink_bps=self.last_rate_bps)
        self._last = decision
        if self.feedback is not None and decision.k < self.device.n:
            self.feedback.on_offload(now, decision.predicted_ms.get(decision.k, math.inf))
        return decision

    def _exploration(self, local: Decision, inputs: ChooserInputs) -> Decision | None:
        """Re-test the best offload the chooser has stopped taking (None: no worker serves
        any). It races the device's own tail, so it costs at most its head's encode and send
        when the offload is as slow as believed, and it corrects every belief that made
        offloading look slow when it is not."""
        served = [
            k
            for k in self.device.candidates
            if k < self.device.n and math.isfinite(local.predicted_ms.get(k, math.inf))
        ]
        if not served:
            return None
        k = min(served, key=lambda k: (local.predicted_ms[k], k))
        part = best_option(k, inputs)
        return Decision(
            k=k,
            reason="explore",
            predicted_ms=local.predicted_ms,
            codec=part.codec or None,
            race=True,
            device_ms=part.device_ms,
        )

    def _races(self, decision: Decision, inputs: ChooserInputs) -> bool:
        """`always`: every offload races. `auto`: when the chance that the offload finishes
        after running locally (uplink uncertainty, learned bias included) exceeds
        `race_above`; a confident offload does not spend the device's energy."""
        if decision.race or self.race == "always":
            return True
        if self.race == "off":
            return False
        part = best_option(decision.k, inputs)
        spread = inputs.link.spread if inputs.link is not None else 0.0
        return chance_of_losing(part, self.device.local_ms, spread) > self.race_above

    def inputs(self, now: float) -> ChooserInputs:
        """What the chooser sees now (exposed for tests and for the simulator's plots)."""
        link: LinkEstimate | None = self.uplink.estimate(now)
        server = estimate_server(
            self.server_view.fresh(now),
            self.device,
            self.server_profile,
            load_aware=self.load_aware,
        )
        if server is not None and self.feedback is not None:
            penalty = self.feedback.penalty_ms(now, self.server_view.latest_at())
            server = server.with_extra_wait(penalty)
        return ChooserInputs(
            device=self.device,
            link=link,
            server=server,
            params=self.params,
            previous_k=self._last.k if self._last is not None else None,
            device_ms=self._device_ms(now),
            fallback=self.fallback,
            racing=self.race == "always",
        )

    def _device_ms(self, now: float) -> dict[int, float]:
        """Head+encode per split: its own measurements, aged toward the profile's time scaled
        by the device's recent speed at any split."""
        ratio = self.speed_ratio.value(1.0, now)
        return {
            c.k: self.device_times.estimate(c.k, c.device_ms * ratio, now)
            for c in self.device.costs
        }

    def deadline_ms(self, decision: Decision) -> float | None:
        if decision.k >= self.device.n:
            return None  # nothing to wait for
        return self.fallback.deadline_ms(decision.predicted_ms.get(decision.k))

    def probe_bytes(self, now: float) -> int:
        if self.pin is not None:
            return 0
        local = self._last is None or self._last.k == self.device.n
        if not local or not self.server_view.fresh(now):
            return 0  # offloading measures the link by itself; no worker, nothing to learn
        return self.prober.probe_bytes(self.uplink, now)

    # -- observations ---------------------------------------------------------------------

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        self.uplink.on_sent(nbytes, now)

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        self.uplink.on_sample(nbytes, seconds, now)

    def on_device_time(self, k: int, ms: float, now: float, *, representative: bool = True) -> None:
        if not 0 <= k <= self.device.n:
            return
        last = self._last
        if last is not None and last.k == k and last.device_ms is not None:
            # Slowness of the head is the device's; the offload's feedback must not count it.
            self._head_overrun_ms = ms - last.device_ms
        if not representative:
            return
        profiled = self.device.costs[k].device_ms
        prior_ms = profiled * self.speed_ratio.value(1.0, now)
        self.device_times.on_measured(k, ms, now, prior_ms=prior_ms)
        # The device's speed is its model compute: split 0 is an encode alone, whose time
        # follows the image's content, and a head of a block or two is mostly noise.
        if k > 0 and profiled >= MIN_RATIO_SHARE * self.device.local_ms:
            self.speed_ratio.observe(ms / profiled, now, prior=1.0)

    def on_telemetry(self, worker_id: str, telemetry: TelemetryLike | None, now: float) -> None:
        self.server_view.on_telemetry(worker_id, telemetry, now)

    def on_result(
        self, k: int, offloaded: bool, latency_ms: float, now: float, *, local_tail_ms: float = 0.0
    ) -> None:
        self.results += 1
        self.explorer.on_result(latency_ms, now, offloaded=offloaded)
        if k >= self.device.n:
            return
        if not offloaded:
            self.fallbacks += 1
        if self.feedback is not None:
            excused = self._head_overrun_ms + local_tail_ms
            self.feedback.on_result(latency_ms, now, excused_ms=excused)


def _offloadable(inputs: ChooserInputs) -> bool:
    """A worker is there and the link is measured and moving: an offload can be tried."""
    link = inputs.link
    return (
        inputs.server is not None
        and link is not None
        and link.rate_bps is not None
        and not link.stalled
    )
