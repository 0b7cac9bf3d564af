"""The device's MQTT link against a real Mosquitto and a real (echo) edge worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.launcher import MosquittoBroker
from device_node.errors import LinkError, NotConnectedError
from device_node.link import DeviceLink
from device_node.records import Fallback
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.session import MqttSession
from schemas.frame import encode_frame, peek_header
from schemas.messages import (
    Prediction,
    ResultMessage,
    StatusMessage,
    encode_message,
    parse_status,
)
from schemas.topics import Topics
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

INFO = echo_model_info("echo")


class Recorder:
    """A policy-side observer that records what the link reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, float]] = []
        self.telemetry: list[tuple[str, object | None]] = []

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        self.events.append(("sent", nbytes, 0.0))

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        self.events.append(("sample", nbytes, seconds))

    def on_telemetry(self, worker_id: str, telemetry: object | None, now: float) -> None:
        self.telemetry.append((worker_id, telemetry))


@pytest.fixture
def echo_worker(broker_settings: BrokerSettings) -> Iterator[EdgeWorker]:
    config = WorkerConfig(
        broker=broker_settings,
        worker_id="echo-1",
        models=[ModelEntry(name="echo")],
        runner="echo",
        device="cpu",
    )
    with EdgeWorker(config) as worker:
        yield worker


def frame(request_id: str) -> bytes:
    tensor = np.linspace(0, 1, INFO.split_shapes[1][0], dtype=np.float32)
    return encode_frame(
        tensor,
        codec="lossless",
        request_id=request_id,
        model="echo",
        fingerprint=INFO.fingerprint,
        split=1,
    )


def test_request_result_and_uplink_samples(
    broker_settings: BrokerSettings, echo_worker: EdgeWorker
) -> None:
    recorder = Recorder()
    with DeviceLink(broker_settings, "dev1", observer=recorder) as link:
        # start() returns once the retained worker state is in: no waiting needed here.
        assert link.alive_workers("echo", 1) == ["echo-1"]
        assert link.alive_workers("echo", 2) == []
        pending = link.publish_request(
            frame("r1"), request_id="r1", model="echo", split=1, expiry_s=5
        )
        outcome = pending.future.result(timeout=5)
        wait_until(lambda: pending.uplink_s is not None)
    assert outcome.message is not None
    assert (outcome.message.status, outcome.message.request_id) == ("ok", "r1")
    assert outcome.message.worker_id == "echo-1"
    assert pending.uplink_s is not None and pending.uplink_s > 0
    size = len(frame("r1"))
    assert recorder.events[0] == ("sent", size, 0.0)
    assert recorder.events[1][:2] == ("sample", size)
    assert ("echo-1", None) not in recorder.telemetry
    assert any(wid == "echo-1" and t is not None for wid, t in recorder.telemetry)


def test_probe_is_acknowledged_and_measured(broker_settings: BrokerSettings) -> None:
    recorder = Recorder()
    with DeviceLink(broker_settings, "dev1", observer=recorder) as link:
        assert link.publish_probe(20000)
        wait_until(lambda: len(recorder.events) == 2)
        assert not link.publish_probe(0)
    assert [e[:2] for e in recorder.events] == [("sent", 20000), ("sample", 20000)]
    assert recorder.events[1][2] > 0
    assert link.counters.probes == 1


def test_a_split_nobody_serves_fails_at_once(
    broker_settings: BrokerSettings, echo_worker: EdgeWorker
) -> None:
    with DeviceLink(broker_settings, "dev1") as link:
        pending = link.publish_request(
            frame("r2"), request_id="r2", model="echo", split=7, expiry_s=5
        )
        outcome = pending.future.result(timeout=5)
    assert (outcome.message, outcome.failure) == (None, Fallback.NO_WORKER)


def test_publish_while_disconnected_raises_instead_of_vanishing(
    broker: MosquittoBroker, broker_settings: BrokerSettings
) -> None:
    link = DeviceLink(broker_settings, "dev1").start()
    try:
        broker.stop()
        wait_until(lambda: not link.connected)
        with pytest.raises(NotConnectedError):
            link.publish_request(frame("r3"), request_id="r3", model="echo", split=1, expiry_s=5)
        assert not link.publish_probe(100)
    finally:
        link.stop()


def test_waiting_request_fails_when_the_connection_drops(
    broker: MosquittoBroker, broker_settings: BrokerSettings
) -> None:
    # A subscriber that never answers: the broker routes the request to it and the device
    # waits, until the broker goes away.
    listener = MqttSession(broker_settings, client_id="silent-listener")
    listener.route(Topics().request("echo", 1, "dev1"), lambda message: None)
    listener.start(wait_s=5)  # returns once the broker confirmed the subscription
    try:
        with DeviceLink(broker_settings, "dev1") as link:
            pending = link.publish_request(
                frame("r4"), request_id="r4", model="echo", split=1, expiry_s=5
            )
            broker.stop()
            outcome = pending.future.result(timeout=10)
        assert (outcome.message, outcome.failure) == (None, Fallback.DISCONNECTED)
    finally:
        listener.stop()


def test_status_is_retained_online_and_offline_after_stop(
    broker_settings: BrokerSettings,
) -> None:
    seen: dict[str, StatusMessage] = {}
    watcher = make_client(broker_settings, "watcher")
    watcher.on_connect = lambda c, u, f, r, p: c.subscribe(Topics().status_all(), 1)
    watcher.on_message = lambda c, u, m: seen.__setitem__(m.topic, parse_status(m.payload))
    with DeviceLink(broker_settings, "dev9"):
        start_client(watcher)
        wait_until(lambda: "splitmq/status/dev9" in seen)
        assert seen["splitmq/status/dev9"].state == "online"
    wait_until(lambda: seen["splitmq/status/dev9"].state == "offline")
    assert seen["splitmq/status/dev9"].role == "device"
    stop_client(watcher)


def test_worker_goes_stale_without_telemetry(
    broker_settings: BrokerSettings, echo_worker: EdgeWorker
) -> None:
    with DeviceLink(broker_settings, "dev1", telemetry_stale_s=5.0) as link:
        view = link.workers()["echo-1"]
        assert view.online is True
        now = time.monotonic()
        assert link.alive_workers("echo", 1, now) == ["echo-1"]
        assert link.alive_workers("echo", 1, now + 60.0) == []  # no telemetry for a minute


def test_no_broker_is_a_link_error() -> None:
    settings = BrokerSettings(host="127.0.0.1", port=9, reconnect_max_delay_s=1)
    with pytest.raises(LinkError, match="no connection"):
        DeviceLink(settings, "dev1").start(wait_s=0.5)


def test_a_reply_naming_a_class_beyond_the_models_count_is_refused(
    broker_settings: BrokerSettings,
) -> None:
    # A responder that takes the request like a worker and answers twice, in order: first
    # with class index 10 of a 10-class model (out of range), then with class 9.
    classes = 10
    responder = MqttSession(broker_settings, client_id="rogue-worker")

    def answer(message: mqtt.MQTTMessage) -> None:
        for index in (classes, classes - 1):
            result = ResultMessage(
                request_id="r5",
                status="ok",
                model="echo",
                split=1,
                worker_id="rogue",
                top5=[Prediction(index=index, label=f"class_{index}", score=0.5)],
            )
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]
            # Under the name it gives in the payload, as a worker must (the topic is the proof).
            reply_topic = Topics().result("dev1", "rogue")
            responder.publish(reply_topic, encode_message(result), properties=props)

    responder.route(Topics().request("echo", 1, "dev1"), answer)
    responder.start(wait_s=5)
    try:
        with DeviceLink(broker_settings, "dev1") as link:
            pending = link.publish_request(
                frame("r5"), request_id="r5", model="echo", split=1, expiry_s=5, num_classes=classes
            )
            outcome = pending.future.result(timeout=10)
            assert link.counters.bad_results == 1
    finally:
        responder.stop()
    assert outcome.message is not None
    assert [p.index for p in outcome.message.top5] == [classes - 1]


def test_results_answered_in_reverse_order_each_reach_their_own_request(
    broker_settings: BrokerSettings,
) -> None:
    # A responder that holds every request until all have come, then answers the last first.
    count = 20
    responder = MqttSession(broker_settings, client_id="reverse-worker")
    held: list[mqtt.MQTTMessage] = []
    reply_topic = Topics().result("dev1", "rev")

    def answer(message: mqtt.MQTTMessage) -> None:
        held.append(message)
        if len(held) < count:
            return
        for request in reversed(held):
            request_id = peek_header(request.payload).request_id
            result = ResultMessage(
                request_id=request_id, status="ok", model="echo", split=1, worker_id="rev",
                top5=[Prediction(index=int(request_id[1:]), label="x", score=0.5)],
            )  # fmt: skip
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = request.properties.CorrelationData  # type: ignore[union-attr]
            responder.publish(reply_topic, encode_message(result), properties=props)

    responder.route(Topics().request("echo", 1, "dev1"), answer)
    responder.start(wait_s=5)
    try:
        with DeviceLink(broker_settings, "dev1") as link:
            waits = [
                link.publish_request(frame(f"r{i}"), request_id=f"r{i}", model="echo", split=1,
                                     expiry_s=5)
                for i in range(count)
            ]  # fmt: skip
            outcomes = [pending.future.result(timeout=10) for pending in waits]
            assert link.counters.results == count and link.counters.late_results == 0
    finally:
        responder.stop()
    for i, outcome in enumerate(outcomes):
        assert outcome.message is not None and outcome.message.request_id == f"r{i}"
        assert [p.index for p in outcome.message.top5] == [i]
