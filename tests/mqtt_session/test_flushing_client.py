"""A FlushingClient's publishes go out from the thread that flushes them: while paho's network
thread is busy, and intact when many threads write at once."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from mqtt_session.client import (
    BrokerSettings,
    FlushingClient,
    TLSSettings,
    make_client,
    start_client,
    stop_client,
)
from mqtt_session.session import MqttSession

pytestmark = pytest.mark.integration


class Inbox:
    """A subscriber that collects the payloads of one topic filter."""

    def __init__(self, settings: BrokerSettings, topic_filter: str) -> None:
        self.payloads: list[bytes] = []
        self.changed = threading.Condition()
        subscribed = threading.Event()
        self.client = make_client(settings, f"inbox-{id(self)}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        start_client(self.client, wait_s=10)
        self.client.subscribe(topic_filter, qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.payloads.append(bytes(message.payload))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.payloads) >= count, timeout_s)


def test_a_flush_writes_while_pahos_thread_is_held_in_a_callback(
    broker_settings: BrokerSettings,
) -> None:
    inbox = Inbox(broker_settings, "flush/out")
    session = MqttSession(broker_settings, client_id="flusher")
    held, release = threading.Event(), threading.Event()

    def hold(message: mqtt.MQTTMessage) -> None:
        held.set()
        release.wait(10)

    session.route("flush/in", hold)
    session.start(wait_s=10)
    try:
        session.publish("flush/in", b"hold")  # paho's thread now waits inside `hold`
        assert held.wait(10)
        session.publish("flush/out", b"not flushed")
        assert not inbox.wait_for(1, 0.3), "paho's thread wrote while held in a callback"
        session.flush()
        assert inbox.wait_for(1, 5) and inbox.payloads == [b"not flushed"]
    finally:
        release.set()
        session.stop(timeout_s=2)
        stop_client(inbox.client)


def test_threads_flushing_at_once_keep_every_packet_intact(broker_settings: BrokerSettings) -> None:
    threads, each = 4, 300
    inbox = Inbox(broker_settings, "flush/many/+")
    session = MqttSession(broker_settings, client_id="many-flushers")
    session.start(wait_s=10)

    def send(t: int) -> None:
        for i in range(each):
            session.publish(f"flush/many/{t}", f"{t}:{i}:".encode() + bytes(i % 700))
            session.flush()

    try:
        workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert inbox.wait_for(threads * each, 20)
        for t in range(threads):
            mine = [p for p in inbox.payloads if p.startswith(f"{t}:".encode())]
            assert mine == [f"{t}:{i}:".encode() + bytes(i % 700) for i in range(each)]
        assert session.connection == 1, "the connection dropped: a corrupt packet?"
    finally:
        session.stop(timeout_s=2)
        stop_client(inbox.client)


def test_only_plain_tcp_clients_flush(broker_settings: BrokerSettings) -> None:
    assert isinstance(make_client(broker_settings, "plain", flushing=True), FlushingClient)
    ca = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not ca.is_file():
        pytest.skip("no system CA bundle to configure TLS with")
    tls = broker_settings.model_copy(update={"tls": TLSSettings(ca_certs=ca)})
    assert not isinstance(make_client(tls, "tls", flushing=True), FlushingClient)
