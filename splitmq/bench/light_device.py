"""A light device for the load benchmarks: real MQTT, real frames, no model.

It publishes precomputed frames as a device would (QoS 1, MQTT v5 ResponseTopic,
CorrelationData = the request id, MessageExpiryInterval) and records each reply with the time it
arrived; it runs no head and no local fallback, so hundreds fit in one process. Built on
`mqtt_session.session.MqttSession` like the real device and worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from schemas.errors import SchemaError
from schemas.messages import ResultMessage, parse_result
from schemas.topics import EXACT_PROPERTY, PREPARE_PROPERTY, Topics


@dataclass(frozen=True)
class Reply:
    """One reply as received: the parsed result (None: unparseable) and when it came."""

    message: ResultMessage | None
    received_at: float  # time.perf_counter()


class LightDevice:
    """One simulated device: publish frames, collect replies by CorrelationData.

    `on_reply(device, request_id, reply)` runs in paho's network thread for every reply, the
    duplicates included (`replies` keeps the first of each request, `duplicates` counts the
    rest).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        device_id: str,
        *,
        topics: Topics | None = None,
        on_reply: Callable[[LightDevice, str, Reply], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.topics = topics or Topics()
        self.result_topic = self.topics.result_inbox(device_id)  # the ResponseTopic
        self._on_reply = on_reply
        self._lock = threading.Condition()
        self.replies: dict[str, Reply] = {}
        self.duplicates = 0
        self.unknown = 0  # replies without a usable CorrelationData
        self.session = MqttSession(settings, client_id=f"light-{device_id}")
        self.session.route(self.topics.results_for(device_id), self._handle_result)

    def start(self, *, wait_s: float = 10.0) -> LightDevice:
        self.session.start(wait_s=wait_s)
        return self

    def stop(self) -> None:
        self.session.stop(timeout_s=2.0)

    def send(
        self,
        topic: str,
        frame: bytes,
        request_id: str,
        *,
        expiry_s: int = 60,
        exact: bool = False,
        prepare_version: str | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Publish one request frame on `topic` (a request topic of `Topics`)."""
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.result_topic
        props.CorrelationData = request_id.encode("utf-8")
        props.MessageExpiryInterval = max(1, expiry_s)
        user_properties = [EXACT_PROPERTY] if exact else []
        if prepare_version is not None:  # the recipe its image was prepared under
            user_properties.append((PREPARE_PROPERTY, prepare_version))
        if user_properties:
            props.UserProperty = user_properties
        return self.session.publish(topic, frame, properties=props)

    def wait(self, request_ids: list[str], timeout_s: float) -> bool:
        """Wait until every one of `request_ids` has a reply; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            return self._lock.wait_for(
                lambda: all(rid in self.replies for rid in request_ids),
                max(0.0, deadline - time.monotonic()),
            )

    def _handle_result(self, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        correlation = getattr(message.properties, "CorrelationData", None)
        try:
            result: ResultMessage | None = parse_result(message.payload)
        except SchemaError:
            result = None
        if not correlation:
            with self._lock:
                self.unknown += 1
            return
        request_id = bytes(correlation).decode("utf-8", errors="replace")
        reply = Reply(result, now)
        with self._lock:
            if request_id in self.replies:
                self.duplicates += 1
            else:
                self.replies[request_id] = reply
            self._lock.notify_all()
        if self._on_reply is not None:
            self._on_reply(self, request_id, reply)
