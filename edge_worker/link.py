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

Replies go to the result topic of the device named in the request topic, under this worker's
id (`<prefix>/result/<device_id>/<worker_id>`: a secure broker lets a worker login publish only
there, so the device knows who answered). A device the broker lets publish only on its own
request topics cannot make the worker answer into another device's results (a confused
deputy): a request whose ResponseTopic is anything but that device's inbox
(`<prefix>/result/<device_id>`) is refused, unanswered, and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge_worker.batching import Queued
from mqtt_session.client import BrokerSettings
from mqtt_session.properties import publish_properties
from mqtt_session.session import MqttSession, NodeState, NodeStatus
from schemas.errors import TopicError
from schemas.topics import EXACT_PROPERTY, PREPARE_PROPERTY, Topics

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundRequest(Queued):
    """A request as received: raw frame bytes plus the MQTT v5 properties of its reply."""

    payload: bytes
    response_topic: str | None  # where the reply goes, derived from the request topic
    correlation_data: bytes | None
    expiry_s: int | None  # MessageExpiryInterval left when the broker delivered it
    mid: int
    qos: int
    connection: int  # which connection delivered it (a mid means nothing on another one)
    # The `splitmq-prepare` property as sent (cut short: it is only compared), or None.
    prepare_version: str | None = field(default=None, kw_only=True)

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def split(self) -> int:
        return self.key[1]


@dataclass(frozen=True)
class UnroutableMessage:
    """A message that cannot be served or answered (acknowledged, counted): its topic is not a
    request topic of this prefix (or another worker's), or its ResponseTopic is not the sending
    device's result topic."""

    topic: str
    reason: str
    response_topic: str | None
    correlation_data: bytes | None
    quiet: bool = False  # the link logged the first of its kind already; count only


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
        self._sink = sink
        self._on_unroutable = on_unroutable
        self._unsubscribed = threading.Event()
        self.foreign_reply_topics = 0  # requests refused for a ResponseTopic not their device's
        self.session = MqttSession(
            settings,
            client_id=worker_id,
            status=NodeStatus(topics.status(worker_id), status_payload),
            manual_ack=True,
            receive_maximum=receive_maximum,
        )
        self._filters = [
            topics.request_shared(share_group, model, k)
            for model, splits in served.items()
            for k in splits
        ]
        # Plain subscriptions to this worker's own request topics, for devices that pick it.
        self._filters += [
            topics.request_direct_filter(model, k, worker_id)
            for model, splits in served.items()
            for k in splits
        ]
        for topic_filter in self._filters:
            self.session.route(topic_filter, self._handle_request)
        self.session.on_connected(on_connected)
        self.client = self.session.client
        self.client.on_unsubscribe = lambda *args: self._unsubscribed.set()

    @property
    def subscriptions(self) -> list[str]:
        return list(self._filters)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> None:
        """Connect (paho's thread reconnects by itself) and, with `wait_s`, wait for SUBACK or
        raise `BrokerConnectError`."""
        self.session.start(wait_s=wait_s)

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self.session.wait_subscribed(timeout_s)

    def unsubscribe(self, timeout_s: float = 2.0) -> None:
        """Leave the share groups, so the broker sends new requests to the other workers."""
        if not self.session.connected:
            return
        self._unsubscribed.clear()
        self.client.unsubscribe(self._filters)
        if not self._unsubscribed.wait(timeout_s):
            LOG.warning("worker %s: no UNSUBACK within %.1f s", self.worker_id, timeout_s)

    def stop(self, *, clear_telemetry: bool = True, timeout_s: float = 5.0) -> None:
        """Publish "offline" (and clear the retained telemetry), then disconnect cleanly."""
        clear = [self.topics.telemetry(self.worker_id)] if clear_telemetry else []
        self.session.stop(clear_retained=clear, timeout_s=timeout_s)

    # -- outgoing -----------------------------------------------------------------------------

    def ack(self, request: InboundRequest) -> None:
        """PUBACK a request, if the connection that delivered it is still the current one."""
        if request.qos > 0 and request.connection == self.session.connection:
            self.client.ack(request.mid, request.qos)

    def reply(self, response_topic: str, correlation_data: bytes | None, payload: bytes) -> None:
        """Publish a result (QoS 1) to the request's ResponseTopic with its CorrelationData."""
        properties = publish_properties(correlation_data=correlation_data)
        self.session.publish(response_topic, payload, properties=properties)

    def flush(self) -> None:
        """Write the queued PUBACKs and replies from this thread (see `MqttSession.flush`)."""
        self.session.flush()

    def publish_telemetry(self, payload: bytes) -> None:
        self.session.publish(self.topics.telemetry(self.worker_id), payload, retain=True)

    def publish_catalog(self, model: str, payload: bytes) -> None:
        """A model's catalog, retained under this worker's id (a secure broker lets no other
        login write it, and revoking this one clears it)."""
        self.session.publish(self.topics.catalog(model, self.worker_id), payload, retain=True)

    # -- incoming (network thread: nothing slow here) ---------------------------------------

    def _handle_request(self, message: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        connection = self.session.connection
        try:
            key, inbox, reply_topic = self._request_route(message.topic)
        except TopicError as exc:
            self._ack_now(message)
            self._on_unroutable(
                UnroutableMessage(message.topic, str(exc), response_topic, correlation)
            )
            return
        if response_topic is not None and response_topic != inbox:
            self._refuse_foreign_reply(message, response_topic, inbox, correlation)
            return
        payload = bytes(message.payload)
        self._sink(
            InboundRequest(
                key=key,
                received=received,
                nbytes=len(payload),
                payload=payload,
                response_topic=reply_topic,
                correlation_data=correlation,
                expiry_s=getattr(props, "MessageExpiryInterval", None),
                mid=message.mid,
                qos=message.qos,
                connection=connection,
                exact=EXACT_PROPERTY in (getattr(props, "UserProperty", None) or ()),
                prepare_version=_prepare_version(getattr(props, "UserProperty", None)),
            )
        )

    def _refuse_foreign_reply(
        self,
        message: mqtt.MQTTMessage,
        response_topic: str,
        reply_topic: str,
        correlation: bytes | None,
    ) -> None:
        """Someone asks for the reply elsewhere than the sending device's result topic: never
        deliver into another device's results. Logged once, counted always."""
        self._ack_now(message)
        self.foreign_reply_topics += 1
        if self.foreign_reply_topics == 1:
            LOG.warning(
                "worker %s: refused a request on %s with ResponseTopic %r (not %r); "
                "further ones are counted as errors, not logged",
                self.worker_id,
                message.topic,
                response_topic[:200],
                reply_topic,
            )
        self._on_unroutable(
            UnroutableMessage(
                message.topic,
                f"ResponseTopic {response_topic[:200]!r} is not {reply_topic!r}",
                response_topic,
                correlation,
                quiet=True,
            )
        )

    def _request_route(self, topic: str) -> tuple[tuple[str, int], str, str]:
        """(model, split) of a shared or of this worker's own request topic, the inbox of the
        device that sent it (its only acceptable ResponseTopic) and this worker's reply topic
        for that device."""
        request = self.topics.parse_request(topic)
        if request.worker_id is not None and request.worker_id != self.worker_id:
            raise TopicError(f"topic {topic!r} is another worker's")
        inbox = self.topics.result_inbox(request.device_id)
        reply = self.topics.result(request.device_id, self.worker_id)
        return (request.model, request.split), inbox, reply

    def _ack_now(self, message: mqtt.MQTTMessage) -> None:
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)


def _prepare_version(user_properties: object) -> str | None:
    """The first `splitmq-prepare` value among a message's user properties, at most 32
    characters (any longer value names no version this worker has)."""
    if not isinstance(user_properties, list):
        return None
    for pair in user_properties:
        if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == PREPARE_PROPERTY:
            return str(pair[1])[:32]
    return None
