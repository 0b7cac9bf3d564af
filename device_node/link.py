"""The device's one MQTT class: publishes requests and probes, and matches results to them.

Everything here runs either in the caller's thread (publish, wait) or in paho's network thread
(callbacks). Callbacks only parse, record and complete futures; no model code runs in them.

Requests go out at QoS 1 to `Topics.request(model, k, device_id)` (the topic names the device,
so a secure broker lets it publish only its own requests) with MQTT v5 ResponseTopic,
CorrelationData (a random per-request token, not the guessable request id) and
MessageExpiryInterval. The time from handing a publish to paho to its PUBACK is an uplink
sample for the policy. Results arrive on `<prefix>/result/<device_id>/<worker_id>`: the worker
level is the answering worker's identity (a secure broker lets a worker login publish only
there), so a reply whose payload names another worker, or that comes from a worker other than
the one a direct request went to, is refused as forged. A result is matched to its waiting
request by CorrelationData; a result nobody waits for (late, after a local fallback, or unknown)
is counted and dropped, so a request never gets two outcomes. Which workers are alive is the
`WorkerDirectory`'s (device_node.workers); the connection itself is a `mqtt_session.session`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import paho.mqtt.client as mqtt

from device_node.errors import LinkError, NotConnectedError
from device_node.pending import Outcome, PendingRequest, reply_mismatch, sender_mismatch
from device_node.records import Fallback
from device_node.workers import WorkerDirectory, WorkerView
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerConnectError
from mqtt_session.properties import publish_properties
from mqtt_session.session import Ack, MqttSession, NodeState, NodeStatus
from schemas.errors import SchemaError
from schemas.messages import (
    StatusMessage,
    TelemetryMessage,
    encode_message,
    parse_result,
)
from schemas.topics import PREPARE_PROPERTY, Topics

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# PUBACK reason "No matching subscribers": the broker took the request but no worker subscribes
# to its split, so no result can ever come.
NO_MATCHING_SUBSCRIBERS = 16


class UplinkObserver(Protocol):
    """What the link reports about its publishes and the workers (a SplitPolicy is one)."""

    def on_uplink_sent(self, nbytes: int, now: float) -> None: ...

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None: ...

    def on_telemetry(
        self, worker_id: str, telemetry: TelemetryMessage | None, now: float
    ) -> None: ...


class NullObserver:
    """An observer that ignores everything (a link without a policy, e.g. in benchmarks)."""

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        return None

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        return None

    def on_telemetry(self, worker_id: str, telemetry: TelemetryMessage | None, now: float) -> None:
        return None


@dataclass
class LinkCounters:
    results: int = 0
    late_results: int = 0  # results for a request no longer waited for
    bad_results: int = 0  # unparseable results, and replies that do not fit their request
    forged_results: int = 0  # replies whose worker is not the one the topic or request names
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
        # The ResponseTopic of every request; workers answer one level below it.
        self.result_topic = self.topics.result_inbox(device_id)
        self._status_topic = self.topics.status(device_id)
        self._lock = threading.Lock()
        self._pending: dict[str, PendingRequest] = {}
        # The same waits by CorrelationData token: a result finds its request in one look-up.
        self._by_token: dict[bytes, PendingRequest] = {}
        self.directory = WorkerDirectory(
            self.topics,
            stale_after_s=telemetry_stale_s,
            listener=lambda wid, t, now: self.observer.on_telemetry(wid, t, now),
            on_gone=self._fail_orphaned,
            clock=clock,
        )
        self.session = MqttSession(
            settings,
            client_id=f"splitmq-device-{device_id}",
            status=NodeStatus(self._status_topic, self._status_payload),
            clock=clock,
        )
        self.session.route(self.topics.results_for(device_id), self._handle_result)
        self.session.route(self.topics.telemetry_all(), self.directory.on_telemetry)
        self.session.route(self.topics.status_all(), self.directory.on_status)
        self.session.on_connected(self._on_connected)
        self.session.on_disconnected(self._on_disconnected)
        self.client = self.session.client

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> DeviceLink:
        """Connect (paho reconnects by itself afterwards). With `wait_s`, wait until the
        subscriptions are in place and the retained telemetry and status have arrived, or
        raise LinkError; without it, return at once (requests run locally until connected)."""
        self.session.start(wait_s=None)
        if wait_s is None:
            return self
        if not self.wait_synced(wait_s):
            self.session.stop(timeout_s=0)
            raise LinkError(
                f"device {self.device_id}: no connection to the broker at "
                f"{self.client.host}:{self.client.port} within {wait_s:g} s"
            )
        return self

    def wait_synced(self, wait_s: float) -> bool:
        """Connected and subscribed, with the workers' retained state in, within `wait_s`."""
        deadline = time.monotonic() + wait_s
        if not self.session.wait_subscribed(wait_s):
            return False
        # One QoS 1 round trip after the SUBACK: the retained messages have then arrived.
        probe = self.topics.probe(self.device_id)
        return self.session.sync(probe, deadline - time.monotonic())

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
        worker_id: str | None = None,
        num_classes: int | None = None,
        prepare_recipe: int | None = None,
    ) -> PendingRequest:
        """Publish one request frame (to `worker_id`'s own request topic when given, else the
        shared one); raises NotConnectedError (nothing waits) when the link is down, so the
        caller runs the request locally at once instead of losing it. `num_classes`, the
        model's class count, bounds the class indices a reply may name. `prepare_recipe`, the
        FORMAT.md 11.2 version the image was prepared under, goes out as `splitmq-prepare`,
        so a worker of another version answers `prepare_mismatch` instead of serving it."""
        if not self.connected:
            raise NotConnectedError(f"device {self.device_id}: not connected to the broker")
        now = self.clock()
        pending = PendingRequest(
            request_id, model, split, len(frame), now, num_classes=num_classes, worker_id=worker_id
        )
        props = publish_properties(
            response_topic=self.result_topic,
            correlation_data=pending.token,
            expiry_s=max(1, math.ceil(expiry_s)),
        )
        if prepare_recipe is not None:
            props.UserProperty = [(PREPARE_PROPERTY, str(prepare_recipe))]
        with self._lock:
            self._remove(request_id)  # a request id used again: the older wait is dropped
            self._pending[request_id] = pending
            self._by_token[pending.token] = pending
        self.observer.on_uplink_sent(len(frame), now)
        try:
            topic = (
                self.topics.request(model, split, self.device_id)
                if worker_id is None
                else self.topics.request_direct(model, split, self.device_id, worker_id)
            )
            acked = self.session.publish_acked(topic, frame, properties=props)
            self.session.flush()  # on its way now, not once paho's network thread wakes
        except BrokerConnectError as exc:
            # paho keeps a QoS 1 message it could not send and resends it on reconnect; the
            # request is withdrawn here, so any result it still produces counts as late.
            self.cancel(request_id)
            raise NotConnectedError(f"device {self.device_id}: {exc}") from exc
        acked.add_done_callback(partial(self._acknowledged, len(frame), pending))
        return pending

    def publish_state(self, payload: bytes) -> None:
        """Retain this device's state message (dropped while offline: the next one follows)."""
        if self.connected:
            self.session.publish(self.topics.device_state(self.device_id), payload, retain=True)

    def cancel(self, request_id: str) -> None:
        """Stop waiting for a request: a result that still comes is dropped as late."""
        with self._lock:
            self._remove(request_id)

    def publish_probe(self, nbytes: int, *, wait_s: float = 0.0) -> bool:
        """Publish `nbytes` of filler at QoS 1 to this device's probe topic (nobody subscribes:
        the broker only acknowledges it). False when the link is down. With `wait_s`, wait up
        to that long for the PUBACK, so that its sample has reached the observer on return."""
        if nbytes <= 0 or not self.connected:
            return False
        props = publish_properties(expiry_s=1)
        self.observer.on_uplink_sent(nbytes, self.clock())
        try:
            acked = self.session.publish_acked(
                self.topics.probe(self.device_id), bytes(nbytes), properties=props
            )
        except BrokerConnectError:
            return False
        self.counters.probes += 1
        acked.add_done_callback(partial(self._acknowledged, nbytes, None))
        if wait_s > 0:
            observed = threading.Event()
            acked.add_done_callback(lambda _: observed.set())  # runs after the one above
            observed.wait(wait_s)
        return True

    # -- workers ------------------------------------------------------------------------

    def alive_workers(self, model: str, split: int | None, now: float | None = None) -> list[str]:
        """Workers alive now that serve `split` of `model` (None: any split of it)."""
        return self.directory.alive(model, split, now)

    def wait_for_workers(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds, evaluated whenever telemetry or status arrives."""
        return self.directory.wait_for(condition, timeout_s)

    def wait_for_worker(self, model: str, split: int | None, timeout_s: float) -> bool:
        """Wait until a live worker serves `split` of `model` (None: any split of it)."""
        return self.wait_for_workers(lambda: bool(self.alive_workers(model, split)), timeout_s)

    def workers(self) -> dict[str, WorkerView]:
        """A snapshot of every worker seen (telemetry, its receive time, status)."""
        return self.directory.snapshot()

    def least_loaded_worker(self, model: str, split: int) -> str | None:
        """The worker to send `split` to directly, or None for the shared topic."""
        return self.directory.least_loaded(model, split)

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connected(self) -> None:
        self.counters.connects += 1

    def _on_disconnected(self) -> None:
        self.counters.disconnects += 1
        self._fail_pending(Fallback.DISCONNECTED)

    def _acknowledged(
        self, nbytes: int, pending: PendingRequest | None, acked: Future[Ack]
    ) -> None:
        """A PUBACK: an uplink sample, and for a request its uplink time or its refusal."""
        if acked.exception() is not None:
            return  # the connection dropped first; _on_disconnected failed the wait
        ack = acked.result()
        self.observer.on_uplink_sample(nbytes, ack.seconds, ack.acked_at)
        if pending is None:
            return
        pending.uplink_s = ack.seconds
        if ack.reason_code == NO_MATCHING_SUBSCRIBERS:
            self._finish(pending.request_id, Outcome(None, ack.acked_at, Fallback.NO_WORKER))
        elif ack.reason_code >= 0x80:
            self.counters.refused += 1
            refused = Outcome(None, ack.acked_at, Fallback.REFUSED, str(ack.reason_code))
            self._finish(pending.request_id, refused)

    def _handle_result(self, message: mqtt.MQTTMessage) -> None:
        now = self.clock()
        try:
            sender = self.topics.parse_result(message.topic).worker_id
            result = parse_result(message.payload)
        except SchemaError as exc:  # TopicError is one
            self.counters.bad_results += 1
            logger.warning("device %s: malformed result dropped: %s", self.device_id, exc)
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        pending = self._pending_for(correlation)
        if pending is None:
            self.counters.late_results += 1
            return
        forged = sender_mismatch(sender, result, pending)
        if forged is not None:
            self.counters.forged_results += 1
            logger.warning("device %s: reply refused: %s", self.device_id, forged)
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
            return self._by_token.get(correlation)

    # -- settling waits -------------------------------------------------------------------

    def _finish(self, request_id: str, outcome: Outcome) -> bool:
        with self._lock:
            pending = self._remove(request_id)
        return pending is not None and pending.settle(outcome)

    def _remove(self, request_id: str) -> PendingRequest | None:
        """Stop waiting for `request_id` (hold `_lock`); the wait it was, if any."""
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._by_token.pop(pending.token, None)
        return pending

    def _fail_pending(self, reason: Fallback) -> None:
        now = self.clock()
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
            self._by_token.clear()
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
