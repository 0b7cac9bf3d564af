"""Reconnect backoff: after an outage of any length a client is back within the delay cap."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker.client import BrokerSettings, log_connect_fail, make_client, start_client, stop_client
from broker.launcher import MosquittoBroker

pytestmark = pytest.mark.integration
# Thread scheduling and the TCP + MQTT handshake on loopback, on top of the backoff cap.
CONNECT_SLACK_S = 2.0
# Only ends a wait that would otherwise hang the test.
GIVE_UP_S = 120.0


def test_the_default_cap_suits_a_lan_broker() -> None:
    # paho's own cap is 30 s; a device offloads again only once reconnected.
    settings = BrokerSettings()
    assert settings.reconnect_min_delay_s == 1
    assert settings.reconnect_max_delay_s <= 5


def test_a_client_at_the_backoff_cap_is_back_within_the_cap(broker: MosquittoBroker) -> None:
    settings = BrokerSettings(host=broker.host, port=broker.port)
    # Failed attempts after which paho's doubling delay has been at the cap once already (so
    # the next wait is the cap, not a doubling that merely happens to equal it).
    low, cap = settings.reconnect_min_delay_s, settings.reconnect_max_delay_s
    failures_to_cap = max(1, math.ceil(math.log2(cap / low))) + 1
    failures: list[float] = []
    at_cap = threading.Event()
    reconnected = threading.Event()

    client = make_client(settings, "backoff-watch")

    def on_connect_fail(c: mqtt.Client, userdata: Any) -> None:
        log_connect_fail(c, userdata)
        failures.append(time.monotonic())
        if len(failures) >= failures_to_cap:
            at_cap.set()

    def on_connect(c: mqtt.Client, *args: object) -> None:
        if failures:
            reconnected.set()

    client.on_connect_fail = on_connect_fail
    client.on_connect = on_connect
    start_client(client)
    try:
        port = broker.port
        broker.stop()
        assert at_cap.wait(GIVE_UP_S), "the client stopped trying to reconnect"
        # Right after a failed attempt: the worst moment for the broker to come back.
        broker.start()
        assert broker.port == port
        back = time.monotonic()
        assert reconnected.wait(GIVE_UP_S), "the client did not reconnect"
        waited = time.monotonic() - back
        assert waited <= cap + CONNECT_SLACK_S, (
            f"reconnected {waited:.1f} s after the broker came back; cap is {cap} s"
        )
    finally:
        stop_client(client)
