"""Reconnect backoff: after an outage of any length a client is back within the delay cap."""

from __future__ import annotations

import math
import random
import threading
import time
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker.launcher import MosquittoBroker
from mqtt_session.client import (
    BrokerSettings,
    log_connect_fail,
    make_client,
    start_client,
    stop_client,
)
from mqtt_session.session import MqttSession, ReconnectBackoff

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


class FixedRandom:
    """A jitter source that always draws the same fraction of the jitter range."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


def test_two_sessions_do_not_retry_in_lockstep_after_a_broker_restart(
    broker: MosquittoBroker,
) -> None:
    # paho alone waits exactly reconnect_min_delay_s (1 s) in both; with the jitter drawn at
    # the two ends of its range, one waits 1 s and the other 2 s.
    settings = BrokerSettings(
        host=broker.host, port=broker.port, reconnect_min_delay_s=1, reconnect_max_delay_s=3
    )
    changed = threading.Condition()
    lost: dict[str, float] = {}
    back: dict[str, float] = {}
    sessions = {
        name: MqttSession(settings, client_id=name, rng=FixedRandom(fraction))
        for name, fraction in (("early", 0.0), ("late", 0.999))
    }

    def record(table: dict[str, float], name: str, session: MqttSession) -> None:
        with changed:
            if session.connection > 1 or table is lost:
                table.setdefault(name, time.monotonic())
            changed.notify_all()

    for name, session in sessions.items():
        session.on_disconnected(partial(record, lost, name, session))
        session.on_connected(partial(record, back, name, session))
        session.start(wait_s=10)
    try:
        broker.stop()
        with changed:
            assert changed.wait_for(lambda: len(lost) == 2, GIVE_UP_S), "no disconnect seen"
        broker.start()
        with changed:
            assert changed.wait_for(lambda: len(back) == 2, GIVE_UP_S), "no reconnect"
    finally:
        for session in sessions.values():
            session.stop(timeout_s=1)
    assert sessions["early"].backoff.last_s == 1.0
    assert sessions["late"].backoff.last_s == pytest.approx(1.999)
    waited = {name: back[name] - lost[name] for name in sessions}
    # The draws differ by a second; half of it leaves room for scheduling on a busy machine.
    assert waited["late"] - waited["early"] >= 0.5, waited


def test_jittered_waits_stay_within_the_configured_bounds_and_grow_to_the_cap() -> None:
    rng = random.Random(7)
    backoff = ReconnectBackoff(1, 4, rng)
    waits = [backoff.next_delay() for _ in range(200)]
    assert all(1 <= wait <= 4 for wait in waits)
    assert waits[0] <= 2, "the first wait after a loss draws from [min, 2 min]"
    assert max(waits) > 3, "later waits reach towards the cap"
    assert len({round(wait, 6) for wait in waits}) > 100, "no two clients share a schedule"
    backoff.reset()
    assert backoff.next_delay() <= 2
