"""Server profiles: the shared H200 format, batch interpolation, errors, and measuring here."""

from __future__ import annotations

import json

import pytest

from splitting.errors import ProfileError
from splitting.reference import DEFAULT_SERVER_PROFILE
from splitting.server_profile import ServerProfile, measure_server_profile

H200 = DEFAULT_SERVER_PROFILE  # shipped inside the package


def small_profile() -> dict:
    """Two blocks; batch 1 and 4 measured (k = 0, 1, 2)."""
    return {
        "device": "test gpu",
        "models": {
            "tiny": {
                "blocks": 2,
                "tail_ms": {"fp32@1": [4.0, 2.0, 0.0], "fp32@4": [10.0, 5.0, 0.0]},
            }
        },
    }


def test_measured_batches_are_returned_as_is():
    profile = ServerProfile(small_profile())
    assert profile.tail_ms("tiny", 0, 1) == 4.0
    assert profile.tail_ms("tiny", 1, 4) == 5.0
    assert profile.batches("tiny") == [1, 4]


def test_batch_is_interpolated_between_measurements():
    profile = ServerProfile(small_profile())
    assert profile.tail_ms("tiny", 0, 2.5) == pytest.approx(7.0)
    assert profile.tail_ms("tiny", 1, 2) == pytest.approx(3.0)


def test_outside_the_measured_range():
    profile = ServerProfile(small_profile())
    assert profile.tail_ms("tiny", 0, 0.2) == 4.0  # below: the smallest batch
    assert profile.tail_ms("tiny", 0, 8) == pytest.approx(20.0)  # above: proportional


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("models"), "non-empty 'models'"),
        (lambda d: d["models"]["tiny"].pop("blocks"), r"models\.tiny\.blocks: Field required"),
        (lambda d: d["models"]["tiny"]["tail_ms"].update({"fp32": [1, 1, 0]}), "dtype"),
        (lambda d: d["models"]["tiny"]["tail_ms"].update({"fp32@2": [1, 0]}), "3 times"),
        (lambda d: d["models"]["tiny"]["tail_ms"].update({"fp32@2": [1, -1, 0]}), "negative"),
    ],
)
def test_malformed_profiles_are_refused(change, message):
    data = small_profile()
    change(data)
    with pytest.raises(ProfileError, match=message):
        ServerProfile(data)


def test_unknown_model_split_or_dtype_names_what_exists():
    profile = ServerProfile(small_profile())
    with pytest.raises(ProfileError, match="profiled: tiny"):
        profile.tail_ms("resnet18", 0)
    with pytest.raises(ProfileError, match=r"outside 0\.\.2"):
        profile.tail_ms("tiny", 3)
    with pytest.raises(ProfileError, match="no fp16 timings"):
        profile.tail_ms("tiny", 0, dtype="fp16")


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "p.json"
    ServerProfile(small_profile()).save(path)
    again = ServerProfile.load(path)
    assert again.tail_ms("tiny", 0, 2.5) == pytest.approx(7.0)
    assert again.device == "test gpu"


def test_unreadable_file_is_a_profile_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        ServerProfile.load(bad)
    with pytest.raises(ProfileError, match="cannot read"):
        ServerProfile.load(tmp_path / "absent.json")


@pytest.mark.skipif(not H200.is_file(), reason="../shared/profiles not present")
def test_h200_profile_reads_as_documented():
    profile = ServerProfile.load(H200)
    assert "efficientnet-lite0" in profile.models()
    assert profile.blocks("efficientnet-lite0") == 18
    assert profile.batches("efficientnet-lite0") == [1, 2, 4, 8, 16, 32, 64]
    # README: 4.6 ms at batch 1 and 7.8 ms at batch 64 for the whole model, fp32.
    assert profile.tail_ms("efficientnet-lite0", 0, 1) == pytest.approx(4.6, abs=0.05)
    assert profile.tail_ms("efficientnet-lite0", 0, 64) == pytest.approx(7.8, abs=0.05)


def test_measuring_here_writes_the_shared_format(tmp_path):
    path = tmp_path / "cpu.json"
    measured = measure_server_profile(
        "efficientnet-lite0", (1, 2), repeats=1, warmup=0, threads=1, path=path
    )
    data = json.loads(path.read_text())
    entry = data["models"]["efficientnet-lite0"]
    assert entry["blocks"] == 18
    assert set(entry["tail_ms"]) == {"fp32@1", "fp32@2"}
    assert len(entry["out_shape"]) == 18
    reloaded = ServerProfile.load(path)
    whole, nothing = (
        reloaded.tail_ms("efficientnet-lite0", 0),
        reloaded.tail_ms("efficientnet-lite0", 18),
    )
    assert whole > 1.0  # the whole model takes real time on a CPU
    assert nothing < whole / 10  # and split n runs nothing
    assert measured.tail_ms("efficientnet-lite0", 0, 2) == reloaded.tail_ms(
        "efficientnet-lite0", 0, 2
    )
