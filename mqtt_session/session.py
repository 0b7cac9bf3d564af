"""One node's MQTT session, shared by devices, workers and the monitoring clients.

    session = MqttSession(settings, client_id="w1", status=NodeStatus(topic, payload_of))
    session.route("splitmq/telemetry/+", on_telemetry)      # subscribed on every connect
    session.on_connected(republish_retained)                # runs after every (re)connect
    session.start(wait_s=10)                                # until SUBACK, or BrokerConnectError
    ...
    session.stop(clear_retained=[telemetry_topic])          # "offline", clears, disconnect

What both runtimes need from a connection lives here once: the retained status with its
"offline" last will, subscriptions restored on every reconnect, callbacks routed by topic
filter, waits on events (never polling), a stop bounded in time, and reconnect waits with
random jitter (`ReconnectBackoff`). Everything registered runs in paho's network thread and must
not block.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_session.client import (
    BrokerSettings,
    FlushingClient,
    WillMessage,
    connect_failure,
    log_connect_fail,
    make_client,
    note_connack,
    note_disconnect,
    wait_or_give_up,
)
from mqtt_session.errors import BrokerConnectError, SessionStateError

LOG = logging.getLogger(__name__)
NodeState = Literal["online", "offline"]
MessageHandler = Callable[[mqtt.MQTTMessage], None]
DEFAULT_STOP_S = 5.0
# How long a PUBACK may wait for its publish() call to return the mid (microseconds in practice).
EARLY_ACK_TTL_S = 10.0


class RandomSource(Protocol):
    """Where the jitter comes from (`random.Random`; tests inject a fixed one)."""

    def random(self) -> float: ...


class ReconnectBackoff:
    """The wait before each reconnect attempt: exponential, capped, with random jitter.

    paho doubles its delay from `reconnect_min_delay_s` to `reconnect_max_delay_s` with no
    randomness, so after a broker restart a whole fleet retries in lockstep, on the same
    seconds. paho's `reconnect_delay_set` restarts its doubling, so the next wait is exactly the
    `min_delay` given; this class gives a fresh one before every wait: attempt `n` (0 after a
    lost connection) waits a uniform draw from `[min, min(max, min * 2^(n+1))]`, "full jitter"
    that never leaves the configured bounds (with min == max there is nothing to draw from).
    """

    def __init__(self, min_s: float, max_s: float, rng: RandomSource) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.rng = rng
        self.attempt = 0
        self.last_s: float | None = None  # the wait given to paho most recently

    def next_delay(self) -> float:
        high = min(self.max_s, self.min_s * 2.0 ** min(self.attempt + 1, 32))
        self.attempt += 1
        self.last_s = self.min_s + self.rng.random() * (high - self.min_s)
        return self.last_s

    def arm(self, client: mqtt.Client) -> None:
        """Set the wait paho takes before its next attempt."""
        # paho accepts seconds as a float (it sleeps on them), though its hint says int.
        client.reconnect_delay_set(self.next_delay(), self.max_s)  # type: ignore[arg-type]

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class Ack:
    """The broker's PUBACK of one QoS 1 publish: when it was handed over and acknowledged
    (the session's clock) and its MQTT v5 reason code (>= 0x80: refused)."""

    sent_at: float
    acked_at: float
    reason_code: int

    @property
    def seconds(self) -> float:
        return self.acked_at - self.sent_at


@dataclass(frozen=True)
class NodeStatus:
    """A node's retained availability topic and the payload of each state."""

    topic: str
    payload: Callable[[NodeState], bytes]


@dataclass(frozen=True)
class Route:
    topic_filter: str
    handler: MessageHandler
    qos: int = 1
    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(_unshared(self.topic_filter).split("/")))

    def matches(self, topic: str) -> bool:
        """Whether `topic` matches the filter (MQTT rules; paho's `topic_matches_sub` builds a
        matcher tree on every call, several microseconds a message and route)."""
        return filter_matches(self.levels, topic)


def filter_matches(levels: tuple[str, ...], topic: str) -> bool:
    """Whether `topic` matches a topic filter split into `levels` at "/": "+" is one level,
    a trailing "#" any number (none included); wildcards in the first level do not match
    "$" topics."""
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    parts = topic.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(parts) == len(levels)


class MqttSession:
    """A paho client that keeps its status, subscriptions and routes across reconnects.

    `client` stays reachable for what is particular to one side (manual PUBACKs, the publish
    callback that times uplinks); the session owns on_connect, on_disconnect, on_subscribe and
    on_message.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        status: NodeStatus | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: RandomSource | None = None,
    ) -> None:
        self.clock = clock
        self.client_id = settings.client_id or client_id
        self.status = status
        self._routes: list[Route] = []
        self._connect_hooks: list[Callable[[], None]] = []
        self._disconnect_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._connection = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._started = False
        self._stopped = False
        self._suback_filters: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its filters
        self._acks: dict[int, tuple[float, Future[Ack]]] = {}  # mid -> (sent at, its future)
        # PUBACKs that arrived before publish() returned their mid: mid -> (time, reason code)
        self._early_acks: dict[int, tuple[float, int]] = {}
        will = WillMessage(status.topic, status.payload("offline")) if status else None
        self.client = make_client(
            settings,
            client_id,
            will=will,
            manual_ack=manual_ack,
            receive_maximum=receive_maximum,
            flushing=True,
        )
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_subscribe = self._handle_subscribe
        self.client.on_message = self._handle_message
        self.client.on_publish = self._handle_puback
        self.client.on_connect_fail = self._handle_connect_fail
        self.backoff = ReconnectBackoff(
            settings.reconnect_min_delay_s,
            settings.reconnect_max_delay_s,
            rng if rng is not None else random.Random(),
        )
        self.backoff.arm(self.client)  # the first connection may fail too (offline start)

    # -- registration -------------------------------------------------------------------------

    def route(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> None:
        """Deliver messages matching `topic_filter` to `handler`; subscribed on every connect
        (and at once when already connected). The first matching route wins."""
        with self._lock:
            self._routes.append(Route(topic_filter, handler, qos))
        if self.connected:
            self._subscribe([(topic_filter, qos)])

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run `hook` after every accepted connection, once "online" is published."""
        self._connect_hooks.append(hook)

    def on_disconnected(self, hook: Callable[[], None]) -> None:
        """Run `hook` whenever the connection is lost or closed."""
        self._disconnect_hooks.append(hook)

    @property
    def subscriptions(self) -> list[str]:
        with self._lock:
            return [route.topic_filter for route in self._routes]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> MqttSession:
        """Start paho's network thread, which connects and reconnects by itself. With `wait_s`,
        wait until the subscriptions are confirmed, or stop and raise `BrokerConnectError`;
        without it, return at once (the caller works offline until connected)."""
        if self._started:
            raise SessionStateError(f"session {self.client_id} is already started")
        if self._stopped:
            raise SessionStateError(f"session {self.client_id} was stopped; build a new one")
        self.client.loop_start()
        self._started = True
        if wait_s is None:
            return self
        if not wait_or_give_up(self._subscribed, self.client, wait_s):
            self.client.loop_stop()
            self._started = False
            raise BrokerConnectError(connect_failure(self.client, wait_s))
        return self

    def stop(
        self, *, clear_retained: Iterable[str] = (), timeout_s: float = DEFAULT_STOP_S
    ) -> None:
        """Publish "offline" and empty payloads on `clear_retained`, wait for their PUBACKs up to
        `timeout_s`, then disconnect cleanly. If the connection is down, the last will speaks."""
        if not self._started:
            return
        self._started = False
        self._stopped = True
        if self.connected:
            infos = [self.publish(topic, b"", retain=True) for topic in clear_retained]
            if self.status is not None:
                infos.append(
                    self.publish(self.status.topic, self.status.payload("offline"), retain=True)
                )
            deadline = time.monotonic() + timeout_s
            for info in infos:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.client.is_connected()

    @property
    def connection(self) -> int:
        """How many connections were accepted so far; a mid means nothing on another one."""
        with self._lock:
            return self._connection

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait for the SUBACK of the current connection (immediately true without routes)."""
        return self._subscribed.wait(timeout_s)

    def sync(self, topic: str, timeout_s: float) -> bool:
        """A QoS 1 round trip on `topic` (an empty, 1-s-expiry publish). The broker sends a new
        subscription's retained messages before it answers anything later on the connection,
        and paho handles packets in order, so once this PUBACK is in, they have been handled.
        A refused publish is acknowledged too, so any topic works."""
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 1
        info = self.publish(topic, b"", properties=props)
        try:
            info.wait_for_publish(timeout=max(0.0, timeout_s))
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    # -- outgoing -----------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def flush(self) -> None:
        """Write the packets queued so far from this thread, not waiting for paho's network
        thread to wake (see `FlushingClient`; a no-op on TLS, where that thread writes)."""
        if isinstance(self.client, FlushingClient):
            self.client.flush()

    def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> Future[Ack]:
        """Publish at QoS 1; the future completes with the PUBACK (or fails with
        `BrokerConnectError` if the connection drops first). Raises `BrokerConnectError` when
        paho cannot take the message (not connected)."""
        future: Future[Ack] = Future()
        sent_at = self.clock()
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerConnectError(f"publish failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if early is None:
                self._acks[info.mid] = (sent_at, future)
        if early is not None:
            future.set_result(Ack(sent_at, *early))
        return future

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        note_connack(client)
        if reason.is_failure:
            LOG.error("%s: broker refused the connection: %s", self.client_id, reason)
            return
        self._subscribed.clear()
        self.backoff.reset()
        with self._lock:
            self._connection += 1
            routes = list(self._routes)
        # Subscribing here is what restores the subscriptions after every reconnect.
        if routes:
            self._subscribe([(route.topic_filter, route.qos) for route in routes])
        else:
            self._subscribed.set()
        if self.status is not None:
            self.publish(self.status.topic, self.status.payload("online"), retain=True)
        self._connected.set()
        for hook in self._connect_hooks:
            _run_hook(hook)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        note_disconnect(client)
        self._connected.clear()
        self._subscribed.clear()
        self.backoff.arm(client)  # before paho's wait for the next attempt
        with self._lock:
            waiting = [future for _, future in self._acks.values()]
            self._acks.clear()  # their PUBACKs will not come on this connection
            self._early_acks.clear()
        for future in waiting:
            future.set_exception(BrokerConnectError("the connection dropped before the PUBACK"))
        if reason.is_failure:
            LOG.warning("%s: disconnected (%s); paho reconnects", self.client_id, reason)
        for hook in self._disconnect_hooks:
            _run_hook(hook)

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log_connect_fail(client, userdata)
        self.backoff.arm(client)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            filters = self._suback_filters.pop(mid, [])
        refused = [
            topic_filter
            for topic_filter, reason in zip(filters, reasons, strict=False)
            if reason.is_failure
        ]
        if refused or (not filters and any(reason.is_failure for reason in reasons)):
            LOG.error("%s: broker refused subscriptions %s", self.client_id, refused or reasons)
        self._subscribed.set()

    def _handle_puback(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        now = self.clock()
        code = reason.value if isinstance(reason, ReasonCode) else int(reason)
        with self._lock:
            entry = self._acks.pop(mid, None)
            if entry is None:
                # Either publish_acked() has not got the mid yet, or nobody tracks this publish
                # (status, sync): keep it briefly, and forget the untracked ones.
                self._early_acks = {
                    m: ack for m, ack in self._early_acks.items() if now - ack[0] < EARLY_ACK_TTL_S
                }
                self._early_acks[mid] = (now, code)
                return
        sent_at, future = entry
        future.set_result(Ack(sent_at, now, code))

    def _subscribe(self, filters: list[tuple[str, int]]) -> None:
        result, mid = self.client.subscribe(filters)
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            with self._lock:
                self._suback_filters[mid] = [topic_filter for topic_filter, _ in filters]

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        with self._lock:
            routes = list(self._routes)
        for route in routes:
            if route.matches(message.topic):
                route.handler(message)
                return


def _unshared(topic_filter: str) -> str:
    """`$share/<group>/<filter>` delivers messages of `<filter>`."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


def _run_hook(hook: Callable[[], None]) -> None:
    # One failing hook must not keep the others (or paho's thread) from running.
    try:
        hook()
    except Exception:
        LOG.exception("connection hook %r failed", hook)
