"""The device's one MQTT class: publishes requests and probes, routes results, tracks workers.

Everything here runs either in the caller's thread (publish, wait) or in paho's network thread
(callbacks). Callbacks only parse, record and complete futures; no model code runs in them.

Requests go out at QoS 1 to `Topics.request(model, k)` with MQTT v5 ResponseTopic,
CorrelationData (the request id) and MessageExpiryInterval. The time from handing a publish to
paho to its PUBACK is an uplink sample for the policy. A result is matched to its waiting
request by CorrelationData; a result nobody waits for (late, after a local fallback, or unknown)
is counted and dropped, so a request never gets two outcomes.

Worker state comes from the retained telemetry (`<prefix>/telemetry/+`; an empty retained
payload means the worker shut down cleanly) and the retained status with its last will
(`<prefix>/status/+`). A worker is alive while its status is not "offline" and its latest
telemetry is younger than the staleness limit.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.client import BrokerSettings
from broker.session import MqttSession, NodeState, NodeStatus
from device_node.errors import LinkError, NotConnectedError
from device_node.records import Fallback
from schemas.errors import SchemaError
from schemas.messages import (
    ResultMessage,
    StatusMessage,
    TelemetryMessage,
    encode_message,
    parse_result,
    parse_status,
    parse_telemetry,
)
from schemas.topics import Topics

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# PUBACK reason "No matching subscribers": the broker took the request but no worker subscribes
# to its split, so no result can ever come.
NO_MATCHING_SUBSCRIBERS = 16
# How long a PUBACK may wait for its publish() call to return the mid (microseconds in practice).
EARLY_ACK_TTL_S = 10.0


class UplinkObserver(Protocol):
    """What the link reports about its publishes and the workers (a SplitPolicy is one)."""

    def on_uplink_sent(self, nbytes: int, now: float) -> None: ...

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None: ...

    def on_telemetry(self, worker_id: str, telemetry: object | None, now: float) -> None: ...


class NullObserver:
    """An observer that ignores everything (a link without a policy, e.g. in benchmarks)."""

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        return None

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        return None

    def on_telemetry(self, worker_id: str, telemetry: object | None, now: float) -> None:
        return None


@dataclass(frozen=True)
class Outcome:
    """How a wait for a result ended: the server's message, or a reason to fall back."""

    message: ResultMessage | None
    received_at: float
    failure: str | None = None


@dataclass
class PendingRequest:
    """A published request waiting for its result."""

    request_id: str
    model: str
    split: int
    nbytes: int
    published_at: float
    future: Future[Outcome] = field(default_factory=Future)
    uplink_s: float | None = None
    puback_event: threading.Event = field(default_factory=threading.Event)
    #: The request's CorrelationData: random, so that nobody who reads the device's results
    #: can guess the next one and answer in the worker's place.
    token: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    def settle(self, outcome: Outcome) -> bool:
        """Complete the wait once; later outcomes (a result after a failure) are ignored."""
        try:
            self.future.set_result(outcome)
        except Exception:  # concurrent.futures.InvalidStateError: already settled
            return False
        return True


def reply_mismatch(result: ResultMessage, pending: PendingRequest) -> str | None:
    """Why a reply cannot be the answer to `pending` (None: it can). An error reply only makes
    the device compute locally, so it needs to match the model and split alone."""
    if result.model != pending.model or result.split != pending.split:
        return (
            f"reply for {result.model} split {result.split}, the request was {pending.model} "
            f"split {pending.split}"
        )
    if result.status == "ok" and result.request_id != pending.request_id:
        return f"reply names request {result.request_id[:80]!r}, not {pending.request_id!r}"
    for p in result.top5:
        if p.index < 0 or not 0.0 <= p.score <= 1.0:
            return f"prediction out of range: class {p.index}, score {p.score}"
    return None


@dataclass
class WorkerView:
    """What the device knows about one worker."""

    worker_id: str
    telemetry: TelemetryMessage | None = None
    telemetry_at: float | None = None  # monotonic receive time, minus the age of a retained one
    online: bool | None = None  # from the retained status; None: no status seen

    def age_s(self, now: float) -> float | None:
        return None if self.telemetry_at is None else now - self.telemetry_at

    def stale_after_s(self, configured: float | None) -> float:
        if configured is not None:
            return configured
        interval = self.telemetry.interval_s if self.telemetry is not None else 1.0
        return 3.0 * interval + 1.0

    def alive(self, now: float, stale_after_s: float | None) -> bool:
        age = self.age_s(now)
        return (
            self.online is not False
            and self.telemetry is not None
            and age is not None
            and age <= self.stale_after_s(stale_after_s)
        )

    def serves(self, model: str, k: int | None) -> bool:
        if self.telemetry is None:
            return False
        splits = self.telemetry.models.get(model, [])
        return bool(splits) if k is None else k in splits


@dataclass
class LinkCounters:
    results: int = 0
    late_results: int = 0  # results for a request no longer waited for
    bad_results: int = 0  # unparseable results, and replies that do not fit their request
    probes: int = 0
    refused: int = 0  # PUBACK with a failure reason code
    connects: int = 0
    disconnects: int = 0


class DeviceLink:
    """The device node's MQTT connection."""

    def __init__(
        self,
        settings: BrokerSettings,
        device_id: str,
        *,
        topics: Topics | None = None,
        observer: UplinkObserver | None = None,
        telemetry_stale_s: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.topics = topics or Topics()
        self.observer: UplinkObserver = observer or NullObserver()
        self.telemetry_stale_s = telemetry_stale_s
        self.clock = clock
        self.counters = LinkCounters()
        self.result_topic = self.topics.result(device_id)
        self._status_topic = self.topics.status(device_id)
        self._lock = threading.Lock()
        self._pending: dict[str, PendingRequest] = {}
        # mid -> (nbytes, hand-over time, request id or None for a probe)
        self._unacked: dict[int, tuple[int, float, str | None]] = {}
        # PUBACKs that arrived before publish() returned its mid: mid -> (time, reason code)
        self._early_acks: dict[int, tuple[float, int]] = {}
        self._workers: dict[str, WorkerView] = {}
        self._workers_changed = threading.Condition()  # notified on every telemetry or status
        self.session = MqttSession(
            settings,
            client_id=f"splitmq-device-{device_id}",
            status=NodeStatus(self._status_topic, self._status_payload),
        )
        self.session.route(self.result_topic, self._handle_result)
        self.session.route(self.topics.telemetry_all(), self._handle_telemetry)
        self.session.route(self.topics.status_all(), self._handle_status)
        self.session.on_connected(self._on_connected)
        self.session.on_disconnected(self._on_disconnected)
        self.client = self.session.client
        self.client.on_publish = self._on_publish

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> DeviceLink:
        """Connect (paho reconnects by itself afterwards). With `wait_s`, wait until the
        subscriptions are in place and the retained telemetry and status have arrived, or
        raise LinkError; without it, return at once (requests run locally until connected)."""
        self.session.start(wait_s=None)
        if wait_s is None:
            return self
        deadline = time.monotonic() + wait_s
        # After the SUBACK, one round trip: the workers' retained state has then arrived.
        probe = self.topics.probe(self.device_id)
        synced = self.session.wait_subscribed(wait_s) and self.session.sync(
            probe, deadline - time.monotonic()
        )
        if not synced:
            self.session.stop(timeout_s=0)
            raise LinkError(
                f"device {self.device_id}: no connection to the broker at "
                f"{self.client.host}:{self.client.port} within {wait_s:g} s"
            )
        return self

    def stop(self) -> None:
        """Say "offline" (retained), disconnect cleanly and fail whatever still waits."""
        self.session.stop(timeout_s=2.0)
        self._fail_pending(Fallback.DISCONNECTED)

    def __enter__(self) -> DeviceLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self.session.connected

    def wait_connected(self, timeout_s: float) -> bool:
        return self.session.wait_connected(timeout_s)

    # -- requests -------------------------------------------------------------------------

    def publish_request(
        self,
        frame: bytes,
        *,
        request_id: str,
        model: str,
        split: int,
        expiry_s: float,
    ) -> PendingRequest:
        """Publish one request frame; raises NotConnectedError (nothing waits) when the link is
        down, so the caller runs the request locally at once instead of losing it."""
        if not self.connected:
            raise NotConnectedError(f"device {self.device_id}: not connected to the broker")
        now = self.clock()
        pending = PendingRequest(request_id, model, split, len(frame), now)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.result_topic
        props.CorrelationData = pending.token
        props.MessageExpiryInterval = max(1, math.ceil(expiry_s))
        with self._lock:
            self._pending[request_id] = pending
        self.observer.on_uplink_sent(len(frame), now)
        info = self.client.publish(
            self.topics.request(model, split), frame, qos=1, properties=props
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho keeps a QoS 1 message it could not send and resends it on reconnect; the
            # request is withdrawn here, so any result it still produces counts as late.
            self.cancel(request_id)
            raise NotConnectedError(
                f"device {self.device_id}: publish failed ({mqtt.error_string(info.rc)})"
            )
        self._register_publish(info.mid, len(frame), now, request_id)
        return pending

    def publish_state(self, payload: bytes) -> None:
        """Retain this device's state message (dropped while offline: the next one follows)."""
        if self.connected:
            self.session.publish(self.topics.device_state(self.device_id), payload, retain=True)

    def cancel(self, request_id: str) -> None:
        """Stop waiting for a request: a result that still comes is dropped as late."""
        with self._lock:
            self._pending.pop(request_id, None)

    def publish_probe(self, nbytes: int) -> bool:
        """Publish `nbytes` of filler at QoS 1 to this device's probe topic (nobody subscribes:
        the broker only acknowledges it). False when the link is down."""
        if nbytes <= 0 or not self.connected:
            return False
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 1
        now = self.clock()
        self.observer.on_uplink_sent(nbytes, now)
        info = self.client.publish(
            self.topics.probe(self.device_id), bytes(nbytes), qos=1, properties=props
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.counters.probes += 1
        self._register_publish(info.mid, nbytes, now, None)
        return True

    def _register_publish(
        self, mid: int, nbytes: int, sent_at: float, request_id: str | None
    ) -> None:
        with self._lock:
            early = self._early_acks.pop(mid, None)
            if early is None:
                self._unacked[mid] = (nbytes, sent_at, request_id)
                return
        self._acknowledged(nbytes, sent_at, request_id, *early)

    # -- workers --------------------------------------------------------------------------

    def alive_workers(self, model: str, split: int | None, now: float | None = None) -> list[str]:
        """Workers alive now that serve `split` of `model` (None: any split of it)."""
        now = self.clock() if now is None else now
        with self._lock:
            return sorted(
                view.worker_id
                for view in self._workers.values()
                if view.alive(now, self.telemetry_stale_s) and view.serves(model, split)
            )

    def wait_for_workers(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds; it is evaluated again whenever a worker's telemetry
        or status arrives. False on timeout."""
        with self._workers_changed:
            return self._workers_changed.wait_for(condition, timeout_s)

    def wait_for_worker(self, model: str, split: int | None, timeout_s: float) -> bool:
        """Wait until a live worker serves `split` of `model` (None: any split of it)."""
        return self.wait_for_workers(lambda: bool(self.alive_workers(model, split)), timeout_s)

    def _workers_updated(self) -> None:
        with self._workers_changed:
            self._workers_changed.notify_all()

    def workers(self) -> dict[str, WorkerView]:
        """A snapshot of every worker seen (telemetry, its receive time, status)."""
        with self._lock:
            return {
                wid: WorkerView(v.worker_id, v.telemetry, v.telemetry_at, v.online)
                for wid, v in self._workers.items()
            }

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connected(self) -> None:
        self.counters.connects += 1

    def _on_disconnected(self) -> None:
        self.counters.disconnects += 1
        with self._lock:
            self._unacked.clear()  # their PUBACKs will not come on this connection
            self._early_acks.clear()
        self._fail_pending(Fallback.DISCONNECTED)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        now = self.clock()
        code = reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code)
        with self._lock:
            entry = self._unacked.pop(mid, None)
            if entry is None:
                # Either publish() has not returned the mid yet, or nobody tracks this publish
                # (status, sync): keep it briefly, and forget the untracked ones.
                self._early_acks = {
                    m: ack for m, ack in self._early_acks.items() if now - ack[0] < EARLY_ACK_TTL_S
                }
                self._early_acks[mid] = (now, code)
                return
        self._acknowledged(*entry, now, code)

    def _acknowledged(
        self, nbytes: int, sent_at: float, request_id: str | None, acked_at: float, code: int
    ) -> None:
        seconds = acked_at - sent_at
        self.observer.on_uplink_sample(nbytes, seconds, acked_at)
        if request_id is None:
            return
        with self._lock:
            pending = self._pending.get(request_id)
        if pending is None:
            return
        pending.uplink_s = seconds
        pending.puback_event.set()
        if code == NO_MATCHING_SUBSCRIBERS:
            self._finish(request_id, Outcome(None, acked_at, Fallback.NO_WORKER))
        elif code >= 0x80:
            self.counters.refused += 1
            self._finish(request_id, Outcome(None, acked_at, f"refused:{code}"))

    def _handle_result(self, message: mqtt.MQTTMessage) -> None:
        now = self.clock()
        try:
            result = parse_result(message.payload)
        except SchemaError as exc:
            self.counters.bad_results += 1
            logger.warning("device %s: malformed result dropped: %s", self.device_id, exc)
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        pending = self._pending_for(correlation)
        if pending is None:
            self.counters.late_results += 1
            return
        problem = reply_mismatch(result, pending)
        if problem is not None:
            self.counters.bad_results += 1
            logger.warning("device %s: reply refused: %s", self.device_id, problem)
            return
        if not self._finish(pending.request_id, Outcome(result, now)):
            self.counters.late_results += 1
            return
        self.counters.results += 1

    def _pending_for(self, correlation: bytes | None) -> PendingRequest | None:
        if not correlation:
            return None
        with self._lock:
            return next((p for p in self._pending.values() if p.token == correlation), None)

    def _handle_telemetry(self, message: mqtt.MQTTMessage) -> None:
        now = self.clock()
        try:
            worker_id = self.topics.parse_telemetry(message.topic)
        except SchemaError:
            return
        telemetry: TelemetryMessage | None = None
        if message.payload:  # empty retained payload: the worker shut down cleanly
            try:
                telemetry = parse_telemetry(message.payload)
            except SchemaError as exc:
                logger.warning(
                    "device %s: bad telemetry from %s: %s", self.device_id, message.topic, exc
                )
                return
        received_at = now
        if telemetry is not None and message.retain:
            # A retained message may be old: date it by its own timestamp.
            received_at = now - max(0.0, time.time() - telemetry.ts)
        with self._lock:
            view = self._workers.setdefault(worker_id, WorkerView(worker_id))
            view.telemetry = telemetry
            view.telemetry_at = received_at if telemetry is not None else None
        self._workers_updated()
        self.observer.on_telemetry(worker_id, telemetry, now)
        if telemetry is None:
            self._fail_orphaned(now)

    def _handle_status(self, message: mqtt.MQTTMessage) -> None:
        now = self.clock()
        if not message.payload:
            return
        try:
            node_id = self.topics.parse_status(message.topic)
            status = parse_status(message.payload)
        except SchemaError:
            return
        # The identity is the topic's, which the broker's ACL can enforce; a payload naming
        # another node is somebody speaking for it.
        if status.role != "worker" or status.node_id != node_id:
            return
        with self._lock:
            view = self._workers.setdefault(node_id, WorkerView(node_id))
            view.online = status.state == "online"
        self._workers_updated()
        if status.state == "offline":
            self.observer.on_telemetry(node_id, None, now)
            self._fail_orphaned(now)

    # -- settling waits -------------------------------------------------------------------

    def _finish(self, request_id: str, outcome: Outcome) -> bool:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        return pending is not None and pending.settle(outcome)

    def _fail_pending(self, reason: str) -> None:
        now = self.clock()
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
        for pending in waiting:
            pending.settle(Outcome(None, now, reason))

    def _fail_orphaned(self, now: float) -> None:
        """Fail the waits of splits that no live worker serves any more."""
        with self._lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            if not self.alive_workers(pending.model, pending.split, now):
                self._finish(pending.request_id, Outcome(None, now, Fallback.WORKER_LOST))

    def _status_payload(self, state: NodeState) -> bytes:
        return encode_message(
            StatusMessage(node_id=self.device_id, role="device", state=state, ts=time.time())
        )
