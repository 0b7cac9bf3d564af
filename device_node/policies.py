"""Split policies for the device node, built from the `policy` section of its configuration.

Kinds: `fixed` (a given split, or by default the model's best natural bottleneck) and `dynamic`
(`splitting.policy.DynamicSplit`, the latency-model chooser). Register your own with
`register_policy(kind, factory)`; a factory gets the policy section and a `PolicyContext`.

Every call into a policy goes through `LockedPolicy`: the device's request thread asks
`choose`, while paho's network thread reports uplink samples and telemetry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device_node.config import DynamicPolicyConfig, FixedPolicyConfig, PolicyConfig
from device_node.errors import PolicyError, PolicyRegistrationError
from schemas.messages import TelemetryMessage
from splitting.errors import SplitPolicyError
from splitting.policy import Decision, DynamicSplit, FixedSplit, SplitPolicy
from splitting.profiles import ModelProfile


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory may use: the model's size, its profile (lazily: profiling takes
    seconds, and a fixed split does not need it), the codec and the device's settings."""

    model_name: str
    n: int
    codec: str
    deadline_ms: float
    slowdown: float
    profile: Callable[[], ModelProfile]
    codecs: tuple[str, ...] = ()
    input_codec: str = "webp"
    min_agreement: float = 0.99
    cores: int = 1


PolicyFactory = Callable[[PolicyConfig, PolicyContext], SplitPolicy]
_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(kind: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    if kind in _REGISTRY and not replace:
        raise PolicyRegistrationError(f"policy kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def policy_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_policy(config: PolicyConfig, context: PolicyContext) -> SplitPolicy:
    factory = _REGISTRY.get(config.kind)
    if factory is None:
        raise PolicyError(
            f"unknown policy kind {config.kind!r}; registered kinds: {', '.join(policy_kinds())}"
        )
    return factory(config, context)


def best_bottleneck(profile: ModelProfile, codec: str) -> int:
    """The default fixed split: the earliest natural bottleneck (besides 0 and n) that sends at
    most half the bytes of split 0's JPEG, so the device runs as few blocks as it can while the
    uplink carries half as much; failing that, the smallest such candidate; failing that, 0."""
    inner = [k for k in profile.candidates(codec) if 0 < k < profile.n]
    if not inner:
        return 0
    half_input = profile.bytes_at(0, codec) / 2
    small_enough = [k for k in inner if profile.bytes_at(k, codec) <= half_input]
    if small_enough:
        return small_enough[0]
    return min(inner, key=lambda k: profile.bytes_at(k, codec))


def _fixed(config: PolicyConfig, context: PolicyContext) -> SplitPolicy:
    if not isinstance(config, FixedPolicyConfig):
        raise PolicyError(f"policy kind 'fixed' got a {type(config).__name__}")
    k = (
        config.split
        if config.split is not None
        else best_bottleneck(context.profile(), context.codec)
    )
    if not 0 <= k <= context.n:
        raise PolicyError(f"policy.split {k} is outside 0..{context.n} for {context.model_name}")
    return FixedSplit(k, deadline_ms=context.deadline_ms)


def _dynamic(config: PolicyConfig, context: PolicyContext) -> SplitPolicy:
    if not isinstance(config, DynamicPolicyConfig):
        raise PolicyError(f"policy kind 'dynamic' got a {type(config).__name__}")
    try:
        return DynamicSplit.for_device(
            profile=context.profile(),
            codec=context.codec,
            codecs=context.codecs,
            input_codec=context.input_codec,
            min_agreement=context.min_agreement,
            slowdown=context.slowdown,
            cores=context.cores,
            deadline_ms=context.deadline_ms,
            server_profile=config.options.server_profile,
            options=config.options,
        )
    except SplitPolicyError as exc:
        raise PolicyError(f"policy.options do not fit DynamicSplit: {exc}") from exc


register_policy("fixed", _fixed)
register_policy("dynamic", _dynamic)


class LockedPolicy:
    """A policy shared by the request thread and paho's network thread, one call at a time."""

    def __init__(self, policy: SplitPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()

    def choose(self, now: float) -> Decision:
        with self._lock:
            return self.policy.choose(now)

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        with self._lock:
            self.policy.on_uplink_sent(nbytes, now)

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        with self._lock:
            self.policy.on_uplink_sample(nbytes, seconds, now)

    def on_device_time(self, k: int, ms: float, now: float, *, representative: bool = True) -> None:
        with self._lock:
            self.policy.on_device_time(k, ms, now, representative=representative)

    def on_telemetry(self, worker_id: str, telemetry: TelemetryMessage | None, now: float) -> None:
        with self._lock:
            self.policy.on_telemetry(worker_id, telemetry, now)

    def on_result(
        self, k: int, offloaded: bool, latency_ms: float, now: float, *, local_tail_ms: float = 0.0
    ) -> None:
        with self._lock:
            self.policy.on_result(k, offloaded, latency_ms, now, local_tail_ms=local_tail_ms)

    def probe_bytes(self, now: float) -> int:
        with self._lock:
            return self.policy.probe_bytes(now)

    def deadline_ms(self, decision: Decision) -> float | None:
        with self._lock:
            return self.policy.deadline_ms(decision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)
