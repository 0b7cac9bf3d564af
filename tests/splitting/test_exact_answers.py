"""The same answer, faster: the agreement floor, the joint choice of split and codec, racing,
the estimator's error report, and the profiles shipped inside the package."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from splitmq.sim.runner import SimSettings, Simulation
from splitmq.sim.scenarios import make_load
from splitmq.sim.strategies import estimator_error
from splitmq.sim.system import DeviceState
from splitting.chooser import ChooserInputs, chance_of_losing, choose
from splitting.errors import SplitPolicyError
from splitting.estimators import LinkEstimate
from splitting.latency import Breakdown, DeviceProfile, ServerEstimate
from splitting.policy import DynamicSplit
from splitting.profiles import ModelProfile, SplitPoint
from splitting.reference import (
    DEFAULT_DEVICE_CLASS,
    DEFAULT_SERVER_PROFILE,
    DEVICE_CLASSES,
    reference_device,
    reference_model_profile,
)
from splitting.server_profile import ServerProfile
from splitting.traces import UplinkTrace
from tests.support.toy_model import toy_server

REPO = Path(__file__).resolve().parents[2]
BYTES = (40_000, 30_000, 9_000, 6_000, 0)
HOST_MS = (0.0, 5.0, 20.0, 30.0, 200.0)


def two_codec_profile(int5_agreement: float = 1.0, int5_encode_ms: float = 0.2) -> ModelProfile:
    """A 4-block toy: int8 and int5 (smaller, here optionally slower to encode) at every split."""
    splits = []
    for k, size in enumerate(BYTES):
        inner = 0 < k < 4
        splits.append(
            SplitPoint(
                k=k,
                name=f"b{k}",
                shape=(k + 1,),
                bytes={"int8": size, "int5": size * 2 // 3 if inner else size},
                device_ms=HOST_MS[k],
                encode_ms={"int8": 0.2, "int5": int5_encode_ms if inner else 0.2},
                decode_ms={"int8": 0.3, "int5": 0.3},
                agreement={"int8": 1.0, "int5": int5_agreement if inner else 1.0},
            )
        )
    return ModelProfile(
        model="toy",
        fingerprint="0" * 16,
        n=4,
        codec="int8",
        input_bytes=BYTES[0],
        splits=tuple(splits),
        block_ms=(5.0, 15.0, 10.0, 170.0),
        host="test",
        threads=1,
    )


def inputs_at(device: DeviceProfile, rate_bps: float) -> ChooserInputs:
    server = ServerEstimate(
        queue_ms=dict.fromkeys(range(4), 0.0), service_ms=dict.fromkeys(range(4), 1.0)
    )
    return ChooserInputs(
        device=device, link=LinkEstimate(rate_bps=rate_bps, rtt_s=0.02), server=server
    )


# -- the agreement floor ----------------------------------------------------------------------


def test_a_pair_below_the_floor_is_never_a_candidate_nor_chosen() -> None:
    profile = two_codec_profile(int5_agreement=0.95)
    strict = DeviceProfile.from_model_profile(
        profile, slowdown=1.0, codec="int8", codecs=("int5",), min_agreement=0.99
    )
    assert all(c.codec == "int8" for k in range(1, 4) for c in strict.options_at(k))
    # On a starved link int5's fewer bytes would win; below the floor it is not on offer.
    for rate in (2e4, 1e5, 1e6):
        assert choose(inputs_at(strict, rate)).codec in ("int8", None)
    loose = DeviceProfile.from_model_profile(
        profile, slowdown=1.0, codec="int8", codecs=("int5",), min_agreement=0.9
    )
    assert {c.codec for c in loose.options_at(2)} == {"int8", "int5"}


def test_an_unmeasured_lossy_pair_does_not_pass_a_floor() -> None:
    profile = two_codec_profile()
    splits = tuple(s.replace(agreement={}) for s in profile.splits)
    device = DeviceProfile.from_model_profile(
        profile.replace(splits=splits), slowdown=1.0, min_agreement=0.99
    )
    assert device.candidates == (0, 4) or all(not device.options_at(k) for k in (1, 2, 3))
    assert device.admissible_pairs() == [(4, None)]


def test_split_zero_and_local_always_stay_exact_options() -> None:
    device = reference_device(min_agreement=1.0)
    pairs = device.admissible_pairs()
    assert (0, "webp") in pairs and (device.n, None) in pairs
    assert all(c.agreement == 1.0 for k, _ in pairs for c in device.options_at(k))


# -- the joint choice -------------------------------------------------------------------------


def test_the_codec_is_chosen_with_the_split_from_the_link() -> None:
    """int5 (fewer bytes, 3 ms more to encode) when the uplink is starved, int8 when it is not."""
    device = DeviceProfile.from_model_profile(
        two_codec_profile(int5_encode_ms=3.0),
        slowdown=1.0,
        codec="int8",
        codecs=("int5",),
        candidates=(0, 3, 4),
        min_agreement=0.99,
    )
    slow = choose(inputs_at(device, 2e5))  # 200 kB/s: 2,000 fewer bytes save 10 ms
    fast = choose(inputs_at(device, 1e8))  # 100 MB/s: bytes cost nothing, encode time does
    assert (slow.k, slow.codec) == (3, "int5")
    assert (fast.k, fast.codec) == (0, "int8") or fast.codec == "int8"


# -- racing -----------------------------------------------------------------------------------


def constant_trace(tmp_path: Path, every_ms: int = 2, seconds: int = 20) -> UplinkTrace:
    path = tmp_path / "constant.up"
    path.write_text("\n".join(str(t) for t in range(every_ms, seconds * 1000 + 1, every_ms)) + "\n")
    return UplinkTrace.read(path)


def slow_server() -> ServerProfile:
    data = toy_server().to_dict()
    for times in data["models"]["toy"]["tail_ms"].values():
        times[:] = [t * 100 for t in times]  # 400 ms for the whole model: slower than local
    return ServerProfile(data)


def toy_device() -> DeviceProfile:
    return DeviceProfile.from_model_profile(two_codec_profile(), slowdown=1.0, min_agreement=0.99)


def state_for(tmp_path: Path, server_profile: ServerProfile) -> DeviceState:
    device = toy_device()
    sim = Simulation(
        device,
        server_profile,
        constant_trace(tmp_path),
        make_load("idle", 20.0),
        SimSettings(duration_s=20.0, one_way_ms=5.0),
    )
    return sim.new_state()


def test_a_raced_request_takes_the_local_result_when_the_server_is_slow(tmp_path: Path) -> None:
    state = state_for(tmp_path, slow_server())
    outcome = state.run(2, 1.0, None, race=True)
    local = state.device.local_ms
    assert outcome.fallback and not outcome.offloaded  # one result: the device's own
    assert outcome.latency_ms == pytest.approx(local + state.device.costs[2].encode_ms)
    # It computed everything itself: head, encode and the whole tail.
    assert outcome.compute_ms == pytest.approx(local + state.device.costs[2].encode_ms)


def test_on_several_cores_a_lost_race_costs_no_encode(tmp_path: Path) -> None:
    state = state_for(tmp_path, slow_server())
    state.device = replace(state.device, cores=4)
    outcome = state.run(2, 1.0, None, race=True)
    local = state.device.local_ms
    assert outcome.fallback and not outcome.offloaded
    assert outcome.latency_ms == pytest.approx(local)  # the encode ran on another core
    assert outcome.compute_ms == pytest.approx(local + state.device.costs[2].encode_ms)


def test_a_raced_request_cancels_the_local_tail_when_the_server_wins(tmp_path: Path) -> None:
    state = state_for(tmp_path, toy_server())
    raced = state.copy().run(1, 1.0, None, race=True)
    plain = state.copy().run(1, 1.0, None)
    assert raced.offloaded and not raced.fallback
    assert raced.latency_ms == pytest.approx(plain.latency_ms)  # racing never slows the winner
    tail = state.device.local_tail_ms(1)
    extra = raced.compute_ms - plain.compute_ms
    assert 0 < extra < tail  # the local tail ran until the result came, then stopped


def test_racing_keeps_latency_near_local_on_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "outage.up"
    ms = [t for t in range(2, 30_001, 2) if not 5_000 <= t < 15_000]
    path.write_text("\n".join(map(str, ms)) + "\n")
    device = toy_device()
    sim = Simulation(
        device,
        toy_server(),
        UplinkTrace.read(path),
        make_load("idle", 30.0),
        SimSettings(duration_s=30.0, one_way_ms=5.0),
    )
    server = toy_server()
    race = sim.run_policy("race", DynamicSplit.build(device, server_profile=server, race="always"))
    plain = sim.run_policy("plain", DynamicSplit.build(device, server_profile=server))
    assert race.k.size == race.latency_ms.size  # one result per request
    worst = device.local_ms + max(c.encode_ms for c in device.costs)
    assert float(np.max(race.latency_ms)) <= worst + 1e-6
    assert float(np.max(plain.latency_ms)) > worst  # without racing the outage costs a deadline


def test_chance_of_losing_grows_with_the_uplink_spread() -> None:
    part = Breakdown(k=1, device_ms=10.0, uplink_ms=40.0, server_ms=5.0)  # 55 ms predicted
    assert chance_of_losing(part, 100.0, 0.0) == 0.0
    assert 0 < chance_of_losing(part, 100.0, 0.3) < chance_of_losing(part, 100.0, 1.0) < 0.5
    assert chance_of_losing(part, 50.0, 0.0) == 1.0
    assert chance_of_losing(replace(part, uplink_ms=math.inf), 100.0, 0.3) == 1.0


def test_auto_racing_races_only_uncertain_offloads() -> None:
    device = toy_device()
    policy = DynamicSplit.build(device, server_profile=toy_server(), race="auto")
    assert policy.race == "auto"
    with pytest.raises(SplitPolicyError, match=r"race: Input should be 'off', 'always' or 'auto'"):
        DynamicSplit.build(device, race="sometimes")
    with pytest.raises(SplitPolicyError) as caught:
        DynamicSplit.build(device, race_above=True, rase="auto")
    lines = str(caught.value).splitlines()
    assert "  race_above: Input should be a valid number, got true" in lines
    assert "  rase: unknown key" in lines


# -- the estimator's error report -------------------------------------------------------------


def test_the_estimator_error_is_small_on_a_constant_link(tmp_path: Path) -> None:
    """A hand-written 6 Mbit/s link: once learned, the estimate matches each transfer."""
    device = toy_device()
    sim = Simulation(
        device,
        toy_server(),
        constant_trace(tmp_path, every_ms=2, seconds=60),
        make_load("idle", 60.0),
        SimSettings(duration_s=60.0, one_way_ms=5.0),
    )
    policy = DynamicSplit.build(device, server_profile=toy_server(), one_way_ms=5.0)
    run = sim.run_policy("dynamic", policy)
    report = estimator_error(run)
    assert (report["samples"] or 0) > 50
    p50, p90 = report["p50"], report["p90"]
    assert p50 is not None and p90 is not None
    assert p50 < 0.1 and p90 < 0.3


def test_the_estimator_error_report_is_empty_without_offloads() -> None:
    assert estimator_error(None) == {"p50": None, "p90": None, "samples": 0}


# -- the shipped profiles ---------------------------------------------------------------------


def test_the_shipped_profiles_load_and_agree_with_each_other() -> None:
    profile = reference_model_profile("efficientnet-lite0")
    server = ServerProfile.load(DEFAULT_SERVER_PROFILE)
    assert profile.n == server.blocks("efficientnet-lite0") == 18
    assert profile.images >= 50  # agreement measured on real images, not a handful
    assert profile.split(0).agreement["webp"] == 1.0 and profile.split(0).agreement["jpeg"] < 0.95
    for name, device_class in DEVICE_CLASSES.items():
        device = reference_device(name)
        assert device.local_ms == pytest.approx(device_class.local_ms)
    assert DEFAULT_DEVICE_CLASS in DEVICE_CLASSES


@pytest.mark.slow
@pytest.mark.integration  # runs `pip wheel`
def test_the_shipped_profiles_are_in_the_built_package(tmp_path: Path) -> None:
    """What an installed package has: build the wheel and read the profiles out of it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("splitmq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"splitting/data/{p.name}" for p in (REPO / "splitting" / "data").glob("*.json")}
    assert shipped and shipped <= names
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "data/*.json" in globs["package-data"]["splitting"]
