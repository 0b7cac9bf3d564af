"""The worker's only MQTT class: shared subscriptions in, results/telemetry/status out.

Flow control: the client connects with MQTT v5 ReceiveMaximum = queue capacity and manual
acknowledgements. `on_message` does no decoding and no model work; it hands the raw payload
with its routing properties to `sink` (the worker's bounded queue) and returns. The PUBACK is
sent when the batcher takes the request from the queue (`ack`), so a broker that enforces
ReceiveMaximum never has more than `queue capacity` unacknowledged deliveries out to this
worker, and a burst waits in the broker (whose per-client queue is sized for it in
broker/mosquitto.conf). Mosquitto 2.0.11 over-delivers once acks flow (see
edge_worker.batching); the queue then holds the extra requests up to its byte limit rather
than drop what was delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.client import BrokerSettings, WillMessage, make_client, start_client
from edge_worker.batching import Queued
from schemas.errors import TopicError
from schemas.topics import Topics

LOG = logging.getLogger(__name__)
NodeState = Literal["online", "offline"]
MAX_TOPIC_BYTES = 65535  # an MQTT UTF-8 string's length prefix is 16 bits


@dataclass(frozen=True)
class InboundRequest(Queued):
    """A request as received: raw frame bytes plus the MQTT v5 properties of its reply."""

    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    expiry_s: int | None  # MessageExpiryInterval left when the broker delivered it
    mid: int
    qos: int
    connection: int  # which connection delivered it (a mid means nothing on another one)

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def split(self) -> int:
        return self.key[1]


@dataclass(frozen=True)
class UnroutableMessage:
    """A message that cannot be served or answered (acknowledged, counted): its topic is not a
    request topic of this prefix, or its ResponseTopic cannot be published to."""

    topic: str
    reason: str
    response_topic: str | None
    correlation_data: bytes | None


class WorkerLink:
    """Connects one worker to the broker.

    `served` maps model -> splits to subscribe; `sink(request)` must not block (it enqueues or
    raises); `on_connected()` runs after every (re)connect, once the status is published, so
    the worker can republish its retained telemetry.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        worker_id: str,
        topics: Topics,
        share_group: str,
        served: Mapping[str, Sequence[int]],
        receive_maximum: int,
        sink: Callable[[InboundRequest], None],
        on_unroutable: Callable[[UnroutableMessage], None],
        status_payload: Callable[[NodeState], bytes],
        on_connected: Callable[[], None] = lambda: None,
    ) -> None:
        self.worker_id = worker_id
        self.topics = topics
        self._filters = [
            topics.request_shared(share_group, model, k)
            for model, splits in served.items()
            for k in splits
        ]
        self._sink = sink
        self._on_unroutable = on_unroutable
        self._status_payload = status_payload
        self._on_connected = on_connected
        self._connection = 0
        self._subscribed = threading.Event()
        self._unsubscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = make_client(
            settings,
            worker_id,
            will=WillMessage(topics.status(worker_id), status_payload("offline")),
            manual_ack=True,
            receive_maximum=receive_maximum,
        )
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_subscribe = self._handle_subscribe
        self.client.on_unsubscribe = lambda *args: self._unsubscribed.set()
        self.client.on_message = self._handle_message

    @property
    def subscriptions(self) -> list[str]:
        return list(self._filters)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> None:
        """Connect (paho's thread reconnects by itself) and, with `wait_s`, wait for SUBACK."""
        start_client(self.client, wait_s=wait_s)
        if wait_s is not None and not self._subscribed.wait(wait_s):
            LOG.warning("worker %s: no SUBACK within %.1f s", self.worker_id, wait_s)

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def unsubscribe(self, timeout_s: float = 2.0) -> None:
        """Leave the share groups, so the broker sends new requests to the other workers."""
        if not self.client.is_connected():
            return
        self._unsubscribed.clear()
        self.client.unsubscribe(self._filters)
        if not self._unsubscribed.wait(timeout_s):
            LOG.warning("worker %s: no UNSUBACK within %.1f s", self.worker_id, timeout_s)

    def stop(self, *, clear_telemetry: bool = True, timeout_s: float = 5.0) -> None:
        """Publish "offline" (and clear the retained telemetry), then disconnect cleanly."""
        if self.client.is_connected():
            infos = [
                self._publish(
                    self.topics.status(self.worker_id), self._status_payload("offline"), retain=True
                )
            ]
            if clear_telemetry:
                infos.append(self._publish(self.topics.telemetry(self.worker_id), b"", retain=True))
            deadline = time.monotonic() + timeout_s
            for info in infos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    # -- outgoing -----------------------------------------------------------------------------

    def ack(self, request: InboundRequest) -> None:
        """PUBACK a request, if the connection that delivered it is still the current one."""
        with self._lock:
            current = self._connection
        if request.qos > 0 and request.connection == current:
            self.client.ack(request.mid, request.qos)

    def reply(self, response_topic: str, correlation_data: bytes | None, payload: bytes) -> None:
        """Publish a result (QoS 1) to the request's ResponseTopic with its CorrelationData."""
        properties = Properties(PacketTypes.PUBLISH)
        if correlation_data is not None:
            properties.CorrelationData = correlation_data
        self.client.publish(response_topic, payload, qos=1, properties=properties)

    def publish_telemetry(self, payload: bytes) -> None:
        self._publish(self.topics.telemetry(self.worker_id), payload, retain=True)

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    # -- paho callbacks (network thread: nothing slow here) -------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            LOG.error("worker %s: broker refused the connection: %s", self.worker_id, reason)
            return
        with self._lock:
            self._connection += 1
        self._subscribed.clear()
        # Subscribing here means a reconnect restores the subscriptions.
        client.subscribe([(topic, 1) for topic in self._filters])
        self._publish(
            self.topics.status(self.worker_id), self._status_payload("online"), retain=True
        )
        self._on_connected()

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            LOG.warning("worker %s: disconnected (%s); paho reconnects", self.worker_id, reason)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            topic for topic, rc in zip(self._filters, reasons, strict=False) if rc.is_failure
        ]
        if refused:
            LOG.error("worker %s: broker refused subscriptions %s", self.worker_id, refused)
        self._subscribed.set()

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        received = time.monotonic()
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        with self._lock:
            connection = self._connection
        try:
            key = self.topics.parse_request(message.topic)
        except TopicError as exc:
            self._ack_now(message)
            self._on_unroutable(
                UnroutableMessage(message.topic, str(exc), response_topic, correlation)
            )
            return
        bad_reply_topic = _unpublishable(response_topic)
        if bad_reply_topic is not None:
            # paho raises on such a reply (wildcards) or the broker drops the connection over
            # it (empty topic, resent after every reconnect): refuse it here, alone.
            self._ack_now(message)
            self._on_unroutable(
                UnroutableMessage(message.topic, bad_reply_topic, response_topic, correlation)
            )
            return
        payload = bytes(message.payload)
        self._sink(
            InboundRequest(
                key=key,
                received=received,
                nbytes=len(payload),
                payload=payload,
                response_topic=response_topic,
                correlation_data=correlation,
                expiry_s=getattr(props, "MessageExpiryInterval", None),
                mid=message.mid,
                qos=message.qos,
                connection=connection,
            )
        )

    def _ack_now(self, message: mqtt.MQTTMessage) -> None:
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)


def _unpublishable(response_topic: str | None) -> str | None:
    """Why a reply cannot be published to `response_topic`; None when it can (or none is
    wanted)."""
    if response_topic is None:
        return None
    if not response_topic:
        return "empty ResponseTopic"
    if "+" in response_topic or "#" in response_topic:
        return f"ResponseTopic {response_topic!r} contains a wildcard"
    if len(response_topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"ResponseTopic is longer than {MAX_TOPIC_BYTES} bytes"
    return None
