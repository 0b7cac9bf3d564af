"""Profile files are read strictly: a wrong type is refused, naming its key, never coerced."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from splitting.errors import ProfileError
from splitting.profiles import ModelProfile
from splitting.reference import DATA_DIR, DEFAULT_SERVER_PROFILE, device_profile_path
from splitting.server_profile import ServerProfile

SHIPPED_DEVICE = DATA_DIR / "efficientnet-lite0.device.json"


def _shipped(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_the_shipped_device_profile_loads_and_writes_back_the_same_json() -> None:
    data = _shipped(SHIPPED_DEVICE)
    profile = ModelProfile.load(SHIPPED_DEVICE)
    assert profile.n == 18 and profile.splits[13].bytes["int8"] > 0
    assert profile.to_dict() == data


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.device.json")), ids=lambda p: p.name)
def test_every_shipped_device_profile_is_named_for_its_model_and_round_trips(path: Path) -> None:
    profile = ModelProfile.load(path)
    assert path == device_profile_path(profile.model, profile.backend)
    assert profile.to_dict() == _shipped(path)


def test_the_shipped_server_profile_loads_unchanged() -> None:
    profile = ServerProfile.load(DEFAULT_SERVER_PROFILE)
    assert "efficientnet-lite0" in profile.models()
    assert profile.to_dict() == _shipped(DEFAULT_SERVER_PROFILE)


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_set(("threads",), 3.9), "threads"),
        (_set(("n",), "18"), "n"),
        (_set(("splits", 3, "k"), 3.9), "splits.3.k"),
        (_set(("splits", 3, "candidate"), "false"), "splits.3.candidate"),
        (_set(("splits", 3, "bytes", "int8"), 12.5), "splits.3.bytes.int8"),
        (_set(("splits", 3, "shape", 0), True), "splits.3.shape.0"),
        (_set(("block_ms", 0), "5.5"), "block_ms.0"),
        (_set(("splits", 3, "colour"), "blue"), "splits.3.colour"),
        (_set(("splits", 3, "bytes"), "many"), "splits.3.bytes"),
    ],
)
def test_a_device_profile_with_a_wrong_type_is_refused_naming_the_key(
    change: Callable[[dict[str, Any]], None], key: str
) -> None:
    data = _shipped(SHIPPED_DEVICE)
    change(data)
    with pytest.raises(ProfileError, match="(?m)^  " + re.escape(key) + ": "):
        ModelProfile.from_dict(data)


def test_a_device_profile_file_with_a_wrong_type_names_the_file(tmp_path: Path) -> None:
    data = _shipped(SHIPPED_DEVICE)
    data["splits"][2]["candidate"] = "false"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"p\.json") as caught:
        ModelProfile.load(path)
    assert "splits.2.candidate" in str(caught.value)


def test_a_device_profile_report_quotes_values_as_json_and_keeps_keys_named_like_types(
    tmp_path: Path,
) -> None:
    # `bytes` is a profile's key, though pydantic also names a union member "bytes".
    data = _shipped(SHIPPED_DEVICE)
    data["n"] = "18"
    del data["splits"][4]["bytes"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError) as caught:
        ModelProfile.load(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"malformed profile {path}:"
    assert '  n: Input should be a valid integer, got "18"' in lines
    assert "  splits.4.bytes: Field required" in lines


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_set(("models", "resnet18", "blocks"), 6.9), "models.resnet18.blocks"),
        (_set(("models", "resnet18", "blocks"), True), "models.resnet18.blocks"),
        (_set(("models", "resnet18", "tail_ms", "fp32@1", 2), "1.0"), "tail_ms.fp32@1.2"),
        (_set(("device",), 200), "device"),
    ],
)
def test_a_server_profile_with_a_wrong_type_is_refused_naming_the_key(
    change: Callable[[dict[str, Any]], None], key: str
) -> None:
    data = _shipped(DEFAULT_SERVER_PROFILE)
    change(data)
    with pytest.raises(ProfileError, match=re.escape(key)):
        ServerProfile(data)
