"""Policies built from the device configuration, and the default fixed split."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from device_node.config import (
    DynamicPolicyConfig,
    FixedPolicyConfig,
    PolicyConfig,
    RegisteredPolicyConfig,
)
from device_node.errors import PolicyError
from device_node.policies import (
    LockedPolicy,
    PolicyContext,
    best_bottleneck,
    build_policy,
    register_policy,
)
from splitting.policy import Decision, FixedSplit, SplitPolicy
from splitting.profiles import ModelProfile, SplitPoint


def profile_with_bytes(int8_bytes: list[int]) -> ModelProfile:
    """A profile whose int8 frame sizes per split are `int8_bytes` (index 0: the JPEG)."""
    n = len(int8_bytes) - 1
    splits = tuple(
        SplitPoint(k=k, name=f"b{k}", shape=(k,), bytes={"int8": b}, device_ms=float(k))
        for k, b in enumerate(int8_bytes)
    )
    return ModelProfile(
        model="m",
        fingerprint="0" * 16,
        n=n,
        codec="int8",
        input_bytes=int8_bytes[0],
        splits=splits,
        block_ms=(1.0,) * n,
        host="test",
        threads=1,
    )


def context_for(profile: ModelProfile, calls: list[int] | None = None) -> PolicyContext:
    def load() -> ModelProfile:
        if calls is not None:
            calls.append(1)
        return profile

    return PolicyContext("m", profile.n, "int8", 2000.0, 1.0, load)


@pytest.mark.parametrize(
    ("int8_bytes", "expected"),
    [
        # candidates 0, 2, 4, 6: the earliest at most half of the JPEG (15000 / 2) is 4
        ([15000, 20000, 9000, 9500, 7000, 8000, 3000, 0], 4),
        # no inner candidate reaches half: the smallest inner candidate
        ([15000, 12000, 11000, 13000, 0], 2),
        # no split smaller than the JPEG: send the JPEG
        ([15000, 30000, 20000, 0], 0),
    ],
)
def test_best_bottleneck(int8_bytes: list[int], expected: int) -> None:
    assert best_bottleneck(profile_with_bytes(int8_bytes), "int8") == expected


def test_fixed_policy_uses_the_given_split_without_profiling() -> None:
    calls: list[int] = []
    profile = profile_with_bytes([15000, 9000, 7000, 0])
    policy = build_policy(FixedPolicyConfig(split=1), context_for(profile, calls))
    assert isinstance(policy, FixedSplit)
    assert policy.choose(0.0).k == 1
    assert calls == []  # the profile is only loaded when the default split is needed


def test_fixed_policy_defaults_to_the_best_bottleneck() -> None:
    calls: list[int] = []
    profile = profile_with_bytes([15000, 20000, 9000, 7000, 0])
    policy = build_policy(FixedPolicyConfig(), context_for(profile, calls))
    assert policy.choose(0.0).k == 3
    assert calls == [1]


def test_bad_policies_are_policy_errors() -> None:
    context = context_for(profile_with_bytes([15000, 9000, 0]))
    with pytest.raises(PolicyError, match=r"outside 0\.\.2"):
        build_policy(FixedPolicyConfig(split=3), context)
    with pytest.raises(PolicyError, match="unknown policy kind 'oracle'"):
        build_policy(RegisteredPolicyConfig(kind="oracle"), context)
    # Options or a split that do not fit the kind are refused with the config, before a build.
    with pytest.raises(ValidationError, match="no options"):
        FixedPolicyConfig(options={"x": 1})
    with pytest.raises(ValidationError, match="only for kind 'fixed'"):
        DynamicPolicyConfig(split=1)


def test_registered_policy_kind_gets_its_options() -> None:
    def every_other(config: PolicyConfig, context: PolicyContext) -> SplitPolicy:
        assert isinstance(config, RegisteredPolicyConfig)
        return FixedSplit(context.n if config.options["local"] else 0)

    register_policy("test_local_or_offload", every_other)
    context = context_for(profile_with_bytes([15000, 9000, 0]))
    policy = build_policy(
        RegisteredPolicyConfig(kind="test_local_or_offload", options={"local": True}), context
    )
    assert policy.choose(0.0).k == 2


def test_locked_policy_serialises_calls_from_two_threads() -> None:
    class Counting(FixedSplit):
        """Counts overlapping calls: more than one at a time would be a race."""

        def __init__(self) -> None:
            super().__init__(1)
            self.active = 0
            self.max_active = 0
            self.samples = 0

        def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            time.sleep(0)  # yield the GIL inside the critical section
            self.samples += 1
            self.active -= 1

        def choose(self, now: float) -> Decision:
            self.on_uplink_sample(0, 0.0, now)
            return super().choose(now)

    inner = Counting()
    locked = LockedPolicy(inner)

    def hammer() -> None:
        for i in range(300):
            locked.on_uplink_sample(100, 0.001, float(i))
            locked.choose(float(i))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inner.samples == 4 * 300 * 2
    assert inner.max_active == 1
