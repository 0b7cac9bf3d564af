"""Profiles: natural bottlenecks, measured bytes per split and codec, the profile cache."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from schemas.frame import encode_frame
from splitting.errors import ProfileError
from splitting.images import augmented_images
from splitting.partition import SplitModel
from splitting.profiles import ModelProfile, SplitPoint, natural_bottlenecks
from splitting.profiling import load_or_profile, profile_cache_path, profile_model
from splitting.registry import load_model

torch.set_num_threads(min(2, torch.get_num_threads()))

CODECS = ("lossless", "fp16", "int8", "int5", "int4")


def test_natural_bottlenecks_keep_each_new_minimum_and_both_ends() -> None:
    assert natural_bottlenecks([100, 500, 80, 90, 80, 50, 70, 0]) == [0, 2, 5, 7]
    assert natural_bottlenecks([10, 20, 30, 0]) == [0, 3]
    assert natural_bottlenecks([10, 9, 8, 7]) == [0, 1, 2, 3]
    assert natural_bottlenecks([5]) == [0]
    with pytest.raises(ProfileError):
        natural_bottlenecks([])


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return augmented_images(3, 224, seed=11)


@pytest.fixture(scope="module")
def profile(lite0: SplitModel, images: np.ndarray) -> ModelProfile:
    return profile_model(lite0, images, repeats=2)


def _frame_bytes(model: SplitModel, array: object, k: int, codec: str) -> int:
    frame = encode_frame(
        array,
        codec=codec,
        request_id="0" * 32,
        model=model.name,
        fingerprint=model.fingerprint,
        split=k,
        device_id="profile-device",
    )
    return len(frame)


def test_split_zero_sends_the_image_under_each_image_codec(
    profile: ModelProfile, lite0: SplitModel, images: np.ndarray
) -> None:
    expected = {
        codec: round(statistics.median(_frame_bytes(lite0, im, 0, codec) for im in images))
        for codec in ("webp", "jpeg", "lossless")
    }
    first = profile.splits[0]
    assert first.bytes == expected
    assert profile.input_codec == "webp" and profile.input_bytes == expected["webp"]
    # Every tensor codec's split 0 is the input codec's image.
    assert all(profile.bytes_at(0, codec) == expected["webp"] for codec in CODECS[1:])
    assert profile.bytes_at(0, "lossless") == expected["lossless"]
    assert profile.with_codec("int5", "jpeg").bytes_at(0) == expected["jpeg"]
    assert first.agreement["webp"] == 1.0  # the very pixels: the unsplit model's answer
    assert first.shape == (224, 224, 3) and first.name == "input" and first.device_ms == 0.0
    last = profile.splits[-1]
    assert last.bytes == dict.fromkeys(CODECS, 0) and last.shape == () and last.candidate


def test_bytes_are_whole_frames_of_the_head_outputs(
    profile: ModelProfile, lite0: SplitModel, images: np.ndarray
) -> None:
    x = lite0.preprocess(images)
    for k in (1, 7, 13):
        outputs = lite0.head(x, k).numpy()
        for codec in CODECS:
            sizes = [_frame_bytes(lite0, out, k, codec) for out in outputs]
            assert profile.bytes_at(k, codec) == round(statistics.median(sizes))
        point = profile.split(k)
        assert point.name == lite0.block_names[k - 1]
        assert point.shape == lite0.split_shapes()[k]
        # fewer bits per value, fewer bytes: each codec beats the one above it
        assert point.bytes["lossless"] > point.bytes["fp16"] > point.bytes["int8"]
        assert point.bytes["int8"] > point.bytes["int5"] > point.bytes["int4"]


def test_candidates_are_the_natural_bottlenecks_of_the_decision_codec(
    profile: ModelProfile,
) -> None:
    assert profile.codec == "int5"
    int5_bytes = [profile.bytes_at(k, "int5") for k in range(profile.n + 1)]
    assert profile.candidates() == natural_bottlenecks(int5_bytes)
    assert [s.k for s in profile.splits if s.candidate] == profile.candidates()
    assert profile.candidates()[0] == 0 and profile.candidates()[-1] == profile.n
    int4 = profile.with_codec("int4")
    int4_bytes = [profile.bytes_at(k, "int4") for k in range(profile.n + 1)]
    assert int4.candidates() == natural_bottlenecks(int4_bytes)
    assert [s.k for s in int4.splits if s.candidate] == int4.candidates()


def test_device_times_accumulate_block_by_block(profile: ModelProfile) -> None:
    assert len(profile.block_ms) == profile.n
    assert all(t > 0 for t in profile.block_ms)
    device = [s.device_ms for s in profile.splits]
    assert device[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(device))
    assert all(s.encode_ms["int8"] > 0 and s.decode_ms["int8"] > 0 for s in profile.splits[1:-1])
    assert profile.splits[0].encode_ms["webp"] > 0
    assert profile.threads == 1 and profile.host


def test_profiling_restores_the_thread_count(lite0: SplitModel, images: np.ndarray) -> None:
    before = torch.get_num_threads()
    profile_model(lite0, images[:1], codecs=["int5"], threads=1, repeats=1)
    assert torch.get_num_threads() == before


def test_profile_round_trips_through_json(profile: ModelProfile, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    profile.save(path)
    data = json.loads(path.read_text())
    assert data["candidates"] == profile.candidates()
    assert data["splits"][0]["bytes"]["webp"] == profile.input_bytes
    assert ModelProfile.load(path) == profile
    assert ModelProfile.from_dict(profile.to_dict()) == profile


def test_malformed_profiles_raise_profile_errors(profile: ModelProfile, tmp_path: Path) -> None:
    data = profile.to_dict()
    del data["fingerprint"]
    with pytest.raises(ProfileError, match="fingerprint"):
        ModelProfile.from_dict(data)
    data = profile.to_dict()
    data["splits"] = data["splits"][:-1]
    with pytest.raises(ProfileError, match="splits for n=18"):
        ModelProfile.from_dict(data)
    data = profile.to_dict()
    data["splits"][3]["bytes"] = "many"
    with pytest.raises(ProfileError, match="malformed"):
        ModelProfile.from_dict(data)
    with pytest.raises(ProfileError, match="not profiled"):
        profile.bytes_at(3, "zfp")
    with pytest.raises(ProfileError, match="outside"):
        profile.split(19)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        ModelProfile.load(bad)
    with pytest.raises(ProfileError, match="cannot read"):
        ModelProfile.load(tmp_path / "missing.json")


def test_bad_profiling_arguments(lite0: SplitModel, images: np.ndarray) -> None:
    with pytest.raises(ProfileError, match="codecs must be among"):
        profile_model(lite0, images, codecs=["int8", "jpeg"])
    with pytest.raises(ProfileError, match="decision codec"):
        profile_model(lite0, images, codecs=["fp16"], codec="int8")
    with pytest.raises(ProfileError, match="threads"):
        profile_model(lite0, images, threads=0)
    with pytest.raises(ProfileError, match="at least one image"):
        profile_model(lite0, [])


def test_a_split_point_needs_its_keys() -> None:
    with pytest.raises(ProfileError, match="bytes: Field required"):
        SplitPoint.from_dict({"k": 1, "name": "b", "shape": [1], "device_ms": 1.0})


@pytest.mark.slow  # profiles the model several times
def test_load_or_profile_caches_by_fingerprint_host_and_threads(
    lite0: SplitModel, tmp_path: Path
) -> None:
    first = load_or_profile(lite0, tmp_path, repeats=1)
    path = profile_cache_path(lite0, tmp_path, threads=1)
    assert path.is_file() and lite0.fingerprint in path.name
    stamp = path.stat().st_mtime_ns
    again = load_or_profile(lite0, tmp_path, repeats=1)
    assert again == first and path.stat().st_mtime_ns == stamp  # read, not measured again
    fp16 = load_or_profile(lite0, tmp_path, codec="fp16", repeats=1)
    assert fp16.codec == "fp16" and fp16.splits[5].bytes == first.splits[5].bytes
    path.write_text("{broken")
    remeasured = load_or_profile(lite0, tmp_path, repeats=1)
    assert remeasured.fingerprint == lite0.fingerprint
    assert ModelProfile.load(path) == remeasured
