"""Home Assistant MQTT discovery for splitmq nodes (device-based discovery).

One retained message per node on `<discovery_prefix>/device/<node_id>/config` describes the node
as one Home Assistant device with several sensor components. The components read topics the
nodes publish anyway: a device's rate-limited state (`<prefix>/state/<id>`), a worker's retained
telemetry (`<prefix>/telemetry/<id>`); availability is the node's retained status topic with its
"offline" last will. An empty retained payload on the config topic removes the node.

Field names follow Home Assistant's MQTT discovery documentation and its abbreviations for the
device-based form: `dev` (`ids`, `name`, `mf`, `mdl`, `sw`), `o` (`name`, `sw`, `url`) and `cmps`,
each component with its platform `p`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from schemas.topics import Topics, check_segment
from splitmq_base.models import STRICT

ORIGIN_NAME = "splitmq"
# The method splitmq implements; deployments point `origin_url` at their own documentation.
DEFAULT_ORIGIN_URL = "https://arxiv.org/abs/2205.11269"
MANUFACTURER = "splitmq"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
DIAGNOSTIC = "diagnostic"
Role = Literal["device", "worker"]


class HomeAssistantSettings(BaseModel):
    """Whether and where a node announces itself to Home Assistant."""

    # Strict like every config section: `enabled: 1` is not a boolean, `"5"` not a number.
    model_config = STRICT

    enabled: bool = Field(True, description="publish the retained discovery config")
    discovery_prefix: str = Field(
        DEFAULT_DISCOVERY_PREFIX, description="Home Assistant's discovery prefix"
    )
    origin_url: str = Field(
        DEFAULT_ORIGIN_URL, min_length=1, description="the `o.url` link Home Assistant shows"
    )
    birth_delay_max_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="after Home Assistant's birth message, re-announce after a random delay "
        "up to this long, so a fleet does not answer all at once",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        Topics(prefix)  # the same level rules as splitmq's own prefix
        return prefix

    def config_topic(self, node_id: str) -> str:
        return discovery_config_topic(self.discovery_prefix, node_id)

    @property
    def status_topic(self) -> str:
        """Where Home Assistant publishes its birth ("online") and last will."""
        return discovery_status_topic(self.discovery_prefix)


def discovery_config_topic(discovery_prefix: str, node_id: str) -> str:
    """A node's retained discovery config: `<discovery_prefix>/device/<node_id>/config`."""
    return f"{discovery_prefix}/device/{check_segment(node_id, 'node id')}/config"


def discovery_config_all(discovery_prefix: str) -> str:
    """Every node's discovery config: `<discovery_prefix>/device/+/config`."""
    return f"{discovery_prefix}/device/+/config"


def discovery_status_topic(discovery_prefix: str) -> str:
    """Home Assistant's birth and last will: `<discovery_prefix>/status`."""
    return f"{discovery_prefix}/status"


@dataclass(frozen=True)
class Sensor:
    """One sensor component: its key in `cmps`, a name, and the JSON field it shows."""

    key: str
    name: str
    template: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    diagnostic: bool = False
    icon: str | None = None


DEVICE_SENSORS: tuple[Sensor, ...] = (
    Sensor("prediction", "Prediction", "{{ value_json.last.label if value_json.last else '' }}",
           state_class=None, icon="mdi:label-outline"),
    Sensor("score", "Prediction score", "{{ (value_json.last.score * 100) | round(1) "
           "if value_json.last else none }}", unit="%"),
    Sensor("latency", "End-to-end latency", "{{ value_json.last.total_ms | round(1) "
           "if value_json.last else none }}", unit="ms", device_class="duration"),
    Sensor("split", "Chosen split", "{{ value_json.last.split if value_json.last else none }}",
           icon="mdi:call-split"),
    Sensor("bytes_sent", "Bytes sent", "{{ value_json.bytes_sent }}", unit="B",
           device_class="data_size", state_class="total_increasing", diagnostic=True),
    Sensor("uplink", "Estimated uplink", "{{ value_json.uplink_bps | round(0) "
           "if value_json.uplink_bps is not none else none }}", unit="bit/s",
           device_class="data_rate", diagnostic=True),
    Sensor("offload_ratio", "Offload ratio", "{{ (value_json.offload_ratio * 100) | round(1) }}",
           unit="%", icon="mdi:cloud-upload-outline"),
    Sensor("fallbacks", "Fallbacks", "{{ value_json.fallbacks }}",
           state_class="total_increasing", diagnostic=True, icon="mdi:backup-restore"),
    Sensor("requests", "Requests", "{{ value_json.requests }}",
           state_class="total_increasing", diagnostic=True),
)  # fmt: skip

WORKER_SENSORS: tuple[Sensor, ...] = (
    Sensor("queue_depth", "Queue depth", "{{ value_json.queue_depth }}", icon="mdi:tray-full"),
    Sensor("throughput", "Throughput", "{{ value_json.throughput_rps | round(2) }}",
           unit="req/s", icon="mdi:speedometer"),
    Sensor("mean_batch", "Mean batch", "{{ value_json.batch_size | round(2) }}",
           icon="mdi:layers-triple"),
    Sensor("utilization", "Utilization", "{{ (value_json.utilization * 100) | round(1) }}",
           unit="%", icon="mdi:chip"),
    Sensor("rejected", "Rejected", "{{ value_json.rejected }}",
           state_class="total_increasing", diagnostic=True),
    Sensor("expired", "Expired", "{{ value_json.expired }}",
           state_class="total_increasing", diagnostic=True),
    Sensor("served", "Served", "{{ value_json.served }}",
           state_class="total_increasing", diagnostic=True),
)  # fmt: skip


def discovery_payload(
    *,
    role: Role,
    node_id: str,
    topics: Topics,
    sw_version: str,
    model: str,
    origin_url: str = DEFAULT_ORIGIN_URL,
) -> dict[str, Any]:
    """The device-based discovery config of one node (a JSON-ready dict)."""
    check_segment(node_id, "node id")
    if role == "device":
        state_topic, sensors, kind = topics.device_state(node_id), DEVICE_SENSORS, "device node"
    else:
        state_topic, sensors, kind = topics.telemetry(node_id), WORKER_SENSORS, "edge worker"
    unique = f"splitmq_{role}_{node_id}"
    return {
        "dev": {
            "ids": [unique],
            "name": f"splitmq {role} {node_id}",
            "mf": MANUFACTURER,
            "mdl": f"{kind} ({model})",
            "sw": sw_version,
        },
        "o": {"name": ORIGIN_NAME, "sw": sw_version, "url": origin_url},
        "cmps": {sensor.key: _component(sensor, unique, state_topic) for sensor in sensors},
        "availability": [
            {
                "topic": topics.status(node_id),
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "qos": 1,
    }


def _component(sensor: Sensor, unique: str, state_topic: str) -> dict[str, Any]:
    component: dict[str, Any] = {
        "p": "sensor",
        "name": sensor.name,
        "unique_id": f"{unique}_{sensor.key}",
        "state_topic": state_topic,
        "value_template": sensor.template,
    }
    optional = {
        "device_class": sensor.device_class,
        "state_class": sensor.state_class,
        "unit_of_measurement": sensor.unit,
        "icon": sensor.icon,
        "entity_category": DIAGNOSTIC if sensor.diagnostic else None,
    }
    component.update({key: value for key, value in optional.items() if value is not None})
    return component
