"""Home Assistant discovery payloads: HA's documented field names and abbreviations."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.discovery import (
    DEVICE_SENSORS,
    WORKER_SENSORS,
    HomeAssistantSettings,
    discovery_payload,
)
from schemas.errors import TopicError
from schemas.topics import Topics

# Device-based discovery (HA MQTT docs): the abbreviated device and origin keys, then `cmps`.
DEVICE_KEYS = {"ids", "name", "mf", "mdl", "sw"}
ORIGIN_KEYS = {"name", "sw", "url"}
# Sensor device classes used here, with units HA accepts for them.
UNITS = {"duration": {"ms"}, "data_size": {"B"}, "data_rate": {"bit/s"}}


@pytest.mark.parametrize("role", ["device", "worker"])
def test_payload_uses_the_device_based_form(role: str) -> None:
    topics = Topics("site/a")
    payload = discovery_payload(
        role=role,  # type: ignore[arg-type]
        node_id="n1",
        topics=topics,
        sw_version="0.1.0",
        model="efficientnet-lite0",
    )
    assert set(payload["dev"]) == DEVICE_KEYS and set(payload["o"]) == ORIGIN_KEYS
    assert payload["availability"][0]["topic"] == topics.status("n1")
    state = topics.device_state("n1") if role == "device" else topics.telemetry("n1")
    for key, component in payload["cmps"].items():
        assert component["p"] == "sensor"
        assert component["unique_id"] == f"splitmq_{role}_n1_{key}"
        assert component["state_topic"] == state
        assert "object_id" not in component  # deprecated in HA
        if "device_class" in component:
            assert component["unit_of_measurement"] in UNITS[component["device_class"]]
    json.dumps(payload)  # JSON-ready


def test_device_shows_what_an_operator_asks_for() -> None:
    keys = {sensor.key for sensor in DEVICE_SENSORS}
    assert {"prediction", "score", "latency", "split", "bytes_sent", "uplink", "offload_ratio",
            "fallbacks"} <= keys  # fmt: skip
    bytes_sent = next(s for s in DEVICE_SENSORS if s.key == "bytes_sent")
    assert (bytes_sent.device_class, bytes_sent.state_class) == ("data_size", "total_increasing")
    worker = {sensor.key for sensor in WORKER_SENSORS}
    assert {"queue_depth", "throughput", "mean_batch", "utilization", "rejected",
            "expired"} <= worker  # fmt: skip


def test_settings_build_the_config_and_birth_topics() -> None:
    settings = HomeAssistantSettings(discovery_prefix="ha")
    assert settings.config_topic("cam-1") == "ha/device/cam-1/config"
    assert settings.status_topic == "ha/status"
    with pytest.raises(TopicError):
        settings.config_topic("a/b")
    with pytest.raises(ValueError, match="discovery_prefix"):
        HomeAssistantSettings(discovery_prefix="ha/#")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"enabled": 1}, "enabled"),
        ({"enabled": "yes"}, "enabled"),
        ({"birth_delay_max_s": True}, "birth_delay_max_s"),
        ({"birth_delay_max_s": "5"}, "birth_delay_max_s"),
        ({"discovery_prefix": 7}, "discovery_prefix"),
    ],
)
def test_settings_are_strict_about_types(data: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as error:
        HomeAssistantSettings.model_validate(data)
    assert [e["loc"] for e in error.value.errors()] == [(key,)]
    # What YAML spells naturally still passes (an integer for a float).
    assert HomeAssistantSettings.model_validate({"enabled": False, "birth_delay_max_s": 2})
