"""What monitoring sees of a fleet: every worker, every device and the broker itself.

`FleetWatcher` subscribes to the topics the nodes already publish (retained worker telemetry,
retained device state, retained status with last wills) and to the broker's `$SYS` statistics,
and keeps the latest of each. `splitmq monitor` draws it, `splitmq exporter` serves it to
Prometheus. A node's identity is its topic's, never its payload's; a payload naming another
node is dropped, and the number of nodes kept is bounded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import paho.mqtt.client as mqtt

from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from schemas.errors import SchemaError
from schemas.messages import (
    DeviceStateMessage,
    TelemetryMessage,
    parse_status,
)
from schemas.retained import read_device_state, read_telemetry
from schemas.topics import Topics

LOG = logging.getLogger(__name__)
SYS_FILTER = "$SYS/broker/#"
DEFAULT_MAX_NODES = 10_000
MAX_SYS_VALUE = 1e18
# The broker figures kept, by $SYS topic (Mosquitto 2.0 names); counters get per-second rates.
SYS_GAUGES = {
    "$SYS/broker/clients/connected": "clients_connected",
    "$SYS/broker/clients/total": "clients_total",
    "$SYS/broker/messages/stored": "messages_stored",
    "$SYS/broker/retained messages/count": "retained_messages",
    "$SYS/broker/subscriptions/count": "subscriptions",
    "$SYS/broker/uptime": "uptime_seconds",  # "123 seconds"
}
SYS_COUNTERS = {
    "$SYS/broker/messages/received": "messages_received",
    "$SYS/broker/messages/sent": "messages_sent",
    "$SYS/broker/bytes/received": "bytes_received",
    "$SYS/broker/bytes/sent": "bytes_sent",
    "$SYS/broker/publish/messages/dropped": "publish_dropped",
}
# Mosquitto's own one-minute averages (per minute), used until two samples give a rate.
SYS_LOAD = {
    "$SYS/broker/load/messages/received/1min": "messages_received",
    "$SYS/broker/load/messages/sent/1min": "messages_sent",
    "$SYS/broker/load/bytes/received/1min": "bytes_received",
    "$SYS/broker/load/bytes/sent/1min": "bytes_sent",
}


@dataclass(frozen=True)
class NodeView:
    """The latest of one node: its retained status and its telemetry or state."""

    node_id: str
    online: bool | None = None  # None: no status seen
    received_at: float | None = None  # monotonic time of the latest telemetry or state


_V = TypeVar("_V", bound=NodeView)
_M = TypeVar("_M")
#: `schemas.retained.read_telemetry` or `read_device_state`: (node id, message or None).
RetainedReader = Callable[[Topics, str, bytes | bytearray], tuple[str, _M | None]]


@dataclass(frozen=True)
class WorkerView(NodeView):
    telemetry: TelemetryMessage | None = None


@dataclass(frozen=True)
class DeviceView(NodeView):
    state: DeviceStateMessage | None = None


@dataclass(frozen=True)
class BrokerView:
    """The broker's `$SYS` figures: gauges, counters and per-second rates of the counters."""

    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetSnapshot:
    workers: dict[str, WorkerView]
    devices: dict[str, DeviceView]
    broker: BrokerView
    taken_at: float  # unix seconds


@dataclass
class _Counter:
    value: float
    at: float


class FleetWatcher:
    """Keeps the latest state of every node and of the broker; thread-safe."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        topics: Topics | None = None,
        client_id: str | None = None,
        max_nodes: int = DEFAULT_MAX_NODES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = topics or Topics()
        self.max_nodes = max_nodes
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._workers: dict[str, WorkerView] = {}
        self._devices: dict[str, DeviceView] = {}
        self._gauges: dict[str, float] = {}
        self._counters: dict[str, _Counter] = {}
        self._rates: dict[str, float] = {}
        self._load: dict[str, float] = {}
        self.dropped = 0  # messages refused: malformed, spoofed, or past max_nodes
        self.session = MqttSession(
            settings, client_id=client_id or f"splitmq-monitor-{uuid.uuid4().hex[:8]}"
        )
        self.session.route(self.topics.telemetry_all(), self._on_telemetry)
        self.session.route(self.topics.device_state_all(), self._on_state)
        self.session.route(self.topics.status_all(), self._on_status)
        self.session.route(SYS_FILTER, self._on_sys)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait_s: float = 10.0) -> FleetWatcher:
        """Connect, subscribe, and return once the retained state has arrived."""
        self.session.start(wait_s=wait_s)
        self.session.sync(self.topics.probe(self.session.client_id), wait_s)
        return self

    def stop(self) -> None:
        self.session.stop(timeout_s=1.0)

    def __enter__(self) -> FleetWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, condition: Callable[[FleetSnapshot], bool], timeout_s: float) -> bool:
        """Wait until `condition(snapshot)` holds; checked again on every update."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self._snapshot_locked()), timeout_s)

    def snapshot(self) -> FleetSnapshot:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> FleetSnapshot:
        rates = dict(self._rates)
        for name, per_minute in self._load.items():
            rates.setdefault(name, per_minute / 60.0)
        return FleetSnapshot(
            workers=dict(self._workers),
            devices=dict(self._devices),
            broker=BrokerView(
                gauges=dict(self._gauges),
                counters={name: c.value for name, c in self._counters.items()},
                rates=rates,
            ),
            taken_at=time.time(),
        )

    # -- incoming (network thread) -----------------------------------------------------------

    def _on_telemetry(self, message: mqtt.MQTTMessage) -> None:
        read = self._read_retained(read_telemetry, message)
        if read is not None:
            worker_id, telemetry, at = read
            self._refresh(self._workers, WorkerView(worker_id, received_at=at, telemetry=telemetry))

    def _on_state(self, message: mqtt.MQTTMessage) -> None:
        read = self._read_retained(read_device_state, message)
        if read is not None:
            device_id, state, at = read
            self._refresh(self._devices, DeviceView(device_id, received_at=at, state=state))

    def _read_retained(
        self, reader: RetainedReader[_M], message: mqtt.MQTTMessage
    ) -> tuple[str, _M | None, float | None] | None:
        """(node id, its message or None when cleared, when it came); None, and counted as
        dropped, when it cannot be used."""
        try:
            node_id, value = reader(self.topics, message.topic, message.payload)
        except SchemaError as exc:
            self._drop(message.topic, str(exc))
            return None
        return node_id, value, self._clock() if value is not None else None

    def _on_status(self, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return
        try:
            node_id = self.topics.parse_status(message.topic)
            status = parse_status(message.payload)
        except SchemaError as exc:
            self._drop(message.topic, str(exc))
            return
        if status.node_id != node_id:
            self._drop(message.topic, f"payload speaks for {status.node_id!r}")
            return
        online = status.state == "online"
        if status.role == "worker":
            self._update(
                self._workers,
                node_id,
                WorkerView(node_id),
                lambda view: replace(view, online=online),
            )
        else:
            self._update(
                self._devices,
                node_id,
                DeviceView(node_id),
                lambda view: replace(view, online=online),
            )

    def _on_sys(self, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        value = _sys_number(bytes(message.payload))
        if value is None:
            return  # version strings and figures this watcher does not keep
        now = self._clock()
        with self._changed:
            if topic in SYS_GAUGES:
                self._gauges[SYS_GAUGES[topic]] = value
            elif topic in SYS_COUNTERS:
                self._count(SYS_COUNTERS[topic], value, now)
            elif topic in SYS_LOAD:
                self._load[SYS_LOAD[topic]] = value
            else:
                return
            self._changed.notify_all()

    # -- helpers ------------------------------------------------------------------------------

    def _refresh(self, table: dict[str, _V], fresh: _V) -> None:
        """Take a node's new telemetry or state (`fresh`), keeping what its status said."""
        self._update(table, fresh.node_id, fresh, lambda view: replace(fresh, online=view.online))

    def _update(
        self, table: dict[str, _V], node_id: str, blank: _V, change: Callable[[_V], _V]
    ) -> None:
        """Replace the node's view by `change(view)` (a new node's: of `blank`), within the
        bound on nodes kept."""
        with self._changed:
            current = table.get(node_id)
            if current is None:
                if len(self._workers) + len(self._devices) >= self.max_nodes:
                    self.dropped += 1
                    return
                current = blank
            table[node_id] = change(current)
            self._changed.notify_all()

    def _count(self, name: str, value: float, now: float) -> None:
        previous = self._counters.get(name)
        if previous is not None and now > previous.at and value >= previous.value:
            self._rates[name] = (value - previous.value) / (now - previous.at)
        self._counters[name] = _Counter(value, now)

    def _drop(self, topic: str, why: str) -> None:
        with self._lock:
            self.dropped += 1
        LOG.debug("monitor: dropped a message on %s: %s", topic, why)


def _sys_number(payload: bytes) -> float | None:
    """A `$SYS` figure as a number ("123", "1.5", "4711 seconds"); None if it is none."""
    text = payload[:64].decode("ascii", errors="replace").split(" ", 1)[0]
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_SYS_VALUE:
        return None
    return value
