"""The trace-driven shaper in front of a real Mosquitto: uplink shaped, downlink delayed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from broker.launcher import MosquittoBroker
from device_node.shaper import ShaperError, TraceShaper
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from splitting.traces import PACKET_PAYLOAD_BYTES, UplinkTrace, wire_bytes

pytestmark = pytest.mark.integration

RATE_MBIT = 2.0  # 1500-byte packets: 167 opportunities/s
ONE_WAY_MS = 20.0


def client_to(address: tuple[str, int], name: str) -> mqtt.Client:
    host, port = address
    client = make_client(BrokerSettings(host=host, port=port), name)
    start_client(client, wait_s=10)
    return client


def publish_seconds(client: mqtt.Client, topic: str, payload: bytes) -> float:
    """Hand-over to PUBACK of one QoS 1 publish."""
    acked = threading.Event()
    client.on_publish = lambda *args: acked.set()
    started = time.monotonic()
    client.publish(topic, payload, qos=1)
    assert acked.wait(20), "no PUBACK"
    return time.monotonic() - started


@pytest.fixture
def shaper(broker: MosquittoBroker) -> Iterator[TraceShaper]:
    trace = UplinkTrace.fixed_rate(RATE_MBIT)
    with TraceShaper(trace, (broker.host, broker.port), one_way_ms=ONE_WAY_MS) as running:
        yield running


def test_a_publish_is_acknowledged_after_its_size_over_the_trace_rate(broker, shaper):
    payload = bytes(150_000)
    direct = client_to((broker.host, broker.port), "direct")
    shaped = client_to(shaper.address, "shaped")
    try:
        unshaped_s = publish_seconds(direct, "t/direct", payload)
        shaped_s = publish_seconds(shaped, "t/shaped", payload)
    finally:
        stop_client(direct)
        stop_client(shaped)
    opportunities_per_s = RATE_MBIT * 1e6 / 8 / 1500
    expected = wire_bytes(len(payload)) / (PACKET_PAYLOAD_BYTES * opportunities_per_s)
    expected += 2 * ONE_WAY_MS / 1000
    assert 0.7 * expected < shaped_s < 2.0 * expected
    assert shaped_s > 5 * unshaped_s
    assert shaper.stats.bytes_up > len(payload)


def test_the_downlink_only_adds_the_one_way_delay(broker, shaper):
    received = threading.Event()
    arrival: list[float] = []
    listener = make_client(BrokerSettings(host=shaper.address[0], port=shaper.address[1]), "sub")
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        arrival.append(time.monotonic())
        received.set()

    listener.on_message = on_message
    listener.on_subscribe = lambda *args: subscribed.set()
    start_client(listener, wait_s=10)
    sender = client_to((broker.host, broker.port), "sender")
    try:
        listener.subscribe("t/down", qos=1)
        assert subscribed.wait(10)
        # A big message from the broker's side: were the downlink shaped like the uplink, it
        # would take ~0.5 s; it only waits the one-way delay.
        sent = time.monotonic()
        sender.publish("t/down", bytes(120_000), qos=1)
        assert received.wait(10)
    finally:
        stop_client(sender)
        stop_client(listener)
    took = arrival[0] - sent
    assert ONE_WAY_MS / 1000 * 0.9 < took < 0.3


def test_a_device_can_disconnect_and_reconnect_through_the_shaper(shaper):
    first = client_to(shaper.address, "again")
    stop_client(first)
    second = client_to(shaper.address, "again")
    try:
        assert publish_seconds(second, "t/again", b"x" * 100) < 5
    finally:
        stop_client(second)
    assert shaper.stats.connections == 2


def test_stop_closes_live_connections(broker):
    shaper = TraceShaper(UplinkTrace.fixed_rate(RATE_MBIT), (broker.host, broker.port)).start()
    client = client_to(shaper.address, "cut")
    gone = threading.Event()
    client.on_disconnect = lambda *args: gone.set()
    try:
        started = time.monotonic()
        shaper.stop()
        assert time.monotonic() - started < 3
        assert gone.wait(10)
    finally:
        client.loop_stop()


def test_shaper_errors_are_specific(tmp_path):
    with pytest.raises(ShaperError, match="cannot read trace"):
        TraceShaper(tmp_path / "absent.up", ("127.0.0.1", 1))
    shaper = TraceShaper(UplinkTrace.fixed_rate(1.0), ("127.0.0.1", 1))
    with pytest.raises(ShaperError, match="not started"):
        _ = shaper.address
