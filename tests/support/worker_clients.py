"""Device-side helpers for the worker tests: a raw MQTT requester, an echo runner whose first
batch is slow, echo frames, the retained catalogs, and a worker configuration to start from."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_worker.config import WorkerConfig
from edge_worker.runner import EchoTailRunner, echo_model_info
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.session import MqttSession
from schemas.frame import Frame, encode_frame
from schemas.messages import (
    ModelCatalogMessage,
    Prediction,
    ResultMessage,
    parse_catalog,
    parse_result,
)
from schemas.topics import Topics
from splitmq.bench.light_device import LightDevice

TOPICS = Topics()
LITE0 = "efficientnet-lite0"


@dataclass
class Requester:
    """Publishes frames as a device would and collects the replies by correlation id."""

    settings: BrokerSettings
    device_id: str = "test-device"
    results: dict[str, ResultMessage] = field(default_factory=dict)
    #: request id -> the worker level of the topic its result came on (the broker-checked one)
    senders: dict[str, str] = field(default_factory=dict)
    correlations: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self.session = MqttSession(self.settings, client_id=self.device_id)
        self.session.route(TOPICS.results_for(self.device_id), self._on_message)
        self.client = self.session.client
        self.session.start(wait_s=5)

    @property
    def topic(self) -> str:
        """The device's inbox (its ResponseTopic); workers answer one level below it."""
        return TOPICS.result_inbox(self.device_id)

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        result = parse_result(msg.payload)
        with self._changed:
            # A request sent without properties is answered without CorrelationData.
            self.correlations.append(bytes(getattr(msg.properties, "CorrelationData", b"")))
            self.results[result.request_id] = result
            self.senders[result.request_id] = TOPICS.parse_result(msg.topic).worker_id
            self._changed.notify_all()

    def send(
        self,
        model: str,
        split: int,
        payload: bytes,
        request_id: str,
        *,
        expiry_s: int | None = 30,
        client: mqtt.Client | None = None,
        reply_to: str | None = None,
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topic if reply_to is None else reply_to
        props.CorrelationData = request_id.encode()
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        topic = TOPICS.request(model, split, self.device_id)
        (client or self.client).publish(topic, payload, 1, properties=props)

    def wait(self, request_ids: Sequence[str], timeout_s: float = 30) -> list[ResultMessage]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not all(rid in self.results for rid in request_ids):
                left = deadline - time.monotonic()
                missing = [rid for rid in request_ids if rid not in self.results]
                assert left > 0, f"{len(missing)} of {len(request_ids)} without a result"
                self._changed.wait(left)
            return [self.results[rid] for rid in request_ids]

    def close(self) -> None:
        self.session.stop()


class SlowFirstRunner(EchoTailRunner):
    """Echo runner whose first batch takes `delay_s` (keeps later requests waiting in the queue)
    and which records every batch it computes (`batches`: the request ids of each, in order)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__([echo_model_info()])
        self.delay_s = delay_s
        self.computed: list[str] = []
        self.batches: list[list[str]] = []

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        if not self.computed:
            time.sleep(self.delay_s)
        batch = [frame.header.request_id for frame in frames]
        self.batches.append(batch)
        self.computed += batch
        return super().run_batch(model, split, frames)


def echo_frame(request_id: str, *, split: int = 1, deadline_ms: float | None = None) -> bytes:
    info = echo_model_info()
    dtype = np.uint8 if split == 0 else np.float32
    return encode_frame(
        np.zeros(info.split_shapes[split], dtype=dtype),
        codec="lossless",
        request_id=request_id,
        model=info.name,
        fingerprint=info.fingerprint,
        split=split,
        deadline_ms=deadline_ms,
    )


def read_catalogs(
    settings: BrokerSettings,
    expected: set[str],
    timeout_s: float = 10,
    *,
    retained_only: bool = True,
) -> dict[str, ModelCatalogMessage]:
    """What a fresh client subscribing to `<prefix>/catalog/+/+` receives (with `retained_only`,
    asserting that it all came retained)."""
    seen: dict[str, ModelCatalogMessage] = {}
    live: list[str] = []  # topics that arrived not retained
    done = threading.Event()
    watcher = make_client(settings, f"catalog-reader-{time.monotonic_ns()}")
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPICS.catalog_all(), qos=1)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:
            live.append(msg.topic)
        seen[TOPICS.parse_catalog(msg.topic).model] = parse_catalog(msg.payload)
        if set(seen) >= expected:
            done.set()

    watcher.on_message = on_message
    start_client(watcher)
    try:
        done.wait(timeout_s)
    finally:
        stop_client(watcher)
    if retained_only:
        assert live == [], "a catalog reaches a late subscriber as a retained message"
    return seen


def worker_config(settings: BrokerSettings, **overrides: object) -> WorkerConfig:
    """A worker serving efficientnet-lite0 on the CPU, one request a batch; override any key."""
    values: dict[str, object] = {
        "broker": settings,
        "worker_id": "test-worker",
        "models": [{"name": LITE0}],
        "device": "cpu",
        "max_batch": 1,
        "telemetry_interval_s": 0.5,
    }
    values.update(overrides)
    return WorkerConfig.model_validate(values)


def until_bridged(device: LightDevice, probe_id: str) -> None:
    """A bridge subscribes at the core a moment after its edge broker starts: send probes until
    one comes back, so the requests a test counts never race the bridge's own start."""
    topic = device.topics.request("echo", 1, device.device_id)
    for attempt in range(40):
        rid = f"{probe_id}-{attempt}"
        device.send(topic, echo_frame(rid), rid)
        if device.wait([rid], timeout_s=0.5):
            return
    raise AssertionError(f"{device.device_id}: nothing came back over the bridge")
