"""The secure broker config: users from mosquitto_passwd, per-role ACL, no anonymous access."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.auth import BrokerUser, acl_rules, render_acl, write_auth_files
from broker.errors import AuthFileError
from broker.launcher import MosquittoBroker
from edge_worker.config import WorkerConfig
from edge_worker.runner import echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.errors import BrokerConnectError
from schemas.frame import encode_frame
from schemas.messages import parse_result
from schemas.topics import Topics

pytestmark = pytest.mark.integration
TOPICS = Topics()
USERS = {
    "worker-1": BrokerUser("worker-secret", "worker"),
    "cam-1": BrokerUser("cam-secret", "device"),
}


@pytest.fixture
def secure_broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(users=USERS) as running:
        yield running


def login(broker: MosquittoBroker, user: str | None) -> BrokerSettings:
    password = USERS[user].password if user else None
    return BrokerSettings(host=broker.host, port=broker.port, username=user, password=password)


def test_password_file_is_hashed_and_acl_is_per_role(tmp_path) -> None:
    files = write_auth_files(tmp_path, USERS, prefix="site")
    passwd = files.password_file.read_text()
    assert "worker-1:$7$" in passwd and "worker-secret" not in passwd  # PBKDF2-SHA512
    acl = files.acl_file.read_text()
    assert "user cam-1\n" + "\n".join(acl_rules("device", "site", "cam-1")) in acl
    assert "topic read site/req/#" in acl_rules("worker", "site", "worker-1")
    with pytest.raises(AuthFileError, match="user name"):
        render_acl({"bad name": USERS["cam-1"]}, "site")


def test_anonymous_and_wrong_password_are_refused(secure_broker: MosquittoBroker) -> None:
    for settings in (
        login(secure_broker, None),
        BrokerSettings(
            host=secure_broker.host, port=secure_broker.port, username="cam-1", password="wrong"
        ),
    ):
        client = make_client(settings, "intruder")
        with pytest.raises(BrokerConnectError):
            start_client(client, wait_s=1.5)
    assert "not authorised" in secure_broker.log_text()


def test_worker_and_device_talk_through_the_acl(secure_broker: MosquittoBroker) -> None:
    config = WorkerConfig(
        broker=login(secure_broker, "worker-1"),
        worker_id="worker-1",
        models=[{"name": "echo"}],
        runner="echo",
    )
    results: list[bytes] = []
    snooped: list[str] = []
    got = threading.Event()
    subscribed = threading.Event()

    device = make_client(login(secure_broker, "cam-1"), "cam-1")

    def on_connect(client: mqtt.Client, *args: object) -> None:
        # Its own results are allowed; other devices' requests are not readable by a device.
        client.subscribe(
            [(TOPICS.results_for("cam-1"), 1), (TOPICS.request("echo", 1, "cam-1"), 1)]
        )

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(TOPICS.request("echo", 1, "cam-1")):
            snooped.append(msg.topic)
        else:
            results.append(bytes(msg.payload))
            got.set()

    device.on_connect = on_connect
    device.on_subscribe = lambda *args: subscribed.set()
    device.on_message = on_message
    with EdgeWorker(config):
        start_client(device)
        try:
            assert subscribed.wait(5)
            info = echo_model_info()
            frame = encode_frame(
                np.zeros(info.split_shapes[1], np.float32),
                codec="lossless",
                request_id="acl-1",
                model="echo",
                fingerprint=info.fingerprint,
                split=1,
            )
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = TOPICS.result_inbox("cam-1")
            props.CorrelationData = b"acl-1"
            device.publish(TOPICS.request("echo", 1, "cam-1"), frame, 1, properties=props)
            assert got.wait(10), "no result through the secure broker"
            time.sleep(0.2)
        finally:
            stop_client(device)
    assert parse_result(results[0]).status == "ok"
    assert snooped == [], "the ACL must keep a device from reading requests"


def test_the_acl_file_keeps_devices_to_their_own_results_and_status() -> None:
    from tests.support.secure_site import Probe

    users = {**USERS, "cam-2": BrokerUser("cam2-secret", "device")}
    with MosquittoBroker(users=users) as broker:

        def probe(user: str) -> Probe:
            settings = BrokerSettings(
                host=broker.host, port=broker.port, username=user, password=users[user].password
            )
            return Probe(settings, user).start()

        snoop, victim, worker = probe("cam-1"), probe("cam-2"), probe("worker-1")
        try:
            # Granted (an ACL file never refuses SUBSCRIBE), but nothing is delivered through it.
            assert snoop.subscribe(TOPICS.result("cam-2", "worker-1"), TOPICS.status_all())[
                0
            ].startswith("Granted")
            assert victim.subscribe(TOPICS.result("cam-2", "worker-1"))[0].startswith("Granted")
            assert snoop.publish(TOPICS.status("worker-1"), b"offline") == "Not authorized"
            assert snoop.publish(TOPICS.telemetry("worker-1"), b"{}") == "Not authorized"
            assert (
                worker.publish(TOPICS.result("cam-2", "worker-1"), b"for cam-2") != "Not authorized"
            )
            assert worker.publish(TOPICS.status("worker-1"), b"online") != "Not authorized"
            victim.wait_for(TOPICS.result("cam-2", "worker-1"), b"for cam-2")
            snoop.wait_for(TOPICS.status("worker-1"), b"online")
            assert snoop.received(TOPICS.result("cam-2", "worker-1")) == []
            assert snoop.received(TOPICS.status("worker-1")) == [b"online"]
        finally:
            for client in (snoop, victim, worker):
                client.stop()
