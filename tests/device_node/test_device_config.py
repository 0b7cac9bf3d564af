"""Device configuration: YAML validation names the bad key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_node.config import (
    DeviceConfig,
    device_config_from_mapping,
    load_device_config,
    with_overrides,
)
from device_node.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return path


def test_example_configs_load() -> None:
    example = load_device_config(CONFIGS / "device.example.yaml")
    assert example.device_id == "camera-1"
    assert example.codec == "int5"
    assert example.policy.kind == "dynamic"
    compose = load_device_config(CONFIGS / "device.compose.yaml")
    assert compose.broker.host == "broker"
    assert compose.slowdown == 4.0


def test_unknown_nested_key_is_named_with_its_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "device_id: cam\npolicy:\n  kind: fixed\n  splt: 3\n")
    with pytest.raises(ConfigError) as error:
        load_device_config(path)
    message = str(error.value)
    assert "policy.splt: unknown key" in message
    assert str(path) in message


def test_unknown_broker_key_and_top_level_key_are_both_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "device_id: cam\nbroker: {host: h, prot: 1884}\ncolour: red\n")
    with pytest.raises(ConfigError) as error:
        load_device_config(path)
    assert "broker.prot: unknown key" in str(error.value)
    assert "colour: unknown key" in str(error.value)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("device_id: cam\ncodec: int9\n", "codec", "unknown codec 'int9'"),
        ("device_id: cam\ncodec: jpeg\n", "codec", "unknown codec 'jpeg'"),
        ("device_id: cam/1\n", "device_id", "'/'"),
        ("device_id: cam\ntopic_prefix: a/+/b\n", "topic_prefix", "'+'"),
        ("device_id: cam\ndeadline_ms: 0\n", "deadline_ms", "greater than 0"),
        ("device_id: cam\nslowdown: 0.5\n", "slowdown", "greater than or equal to 1"),
        (
            "device_id: cam\npolicy: {kind: fixed, split: -1}\n",
            "policy.split",
            "greater than or equal to 0",
        ),
        ("device_id: cam\npolicy: {split: 3}\n", "policy.split", "only for kind 'fixed'"),
        ("device_id: cam\nsource: {on_unreadable: ignore}\n", "source.on_unreadable", "skip"),
        ("codec: int8\n", "device_id", "Field required"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_device_config(write(tmp_path, text))
    line = next(line for line in str(error.value).splitlines() if line.strip().startswith(key))
    assert words in line


def test_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_device_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_device_config(write(tmp_path, "device_id: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_device_config(write(tmp_path, "- a\n- b\n"))


def test_overrides_are_validated_again() -> None:
    config = DeviceConfig(device_id="cam")
    assert with_overrides(config, {"codec": "fp16", "requests": None}).codec == "fp16"
    with pytest.raises(ConfigError, match="command-line overrides"):
        with_overrides(config, {"rate_hz": -1})


def test_mapping_source_name_appears_in_errors() -> None:
    with pytest.raises(ConfigError, match="my-source"):
        device_config_from_mapping({"device_id": "cam", "extra": 1}, source="my-source")
