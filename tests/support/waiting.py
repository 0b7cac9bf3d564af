"""Waiting in tests for state that another thread or process changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client

POLL_S = 0.02


def wait_until(condition: Callable[[], object], timeout_s: float = 20.0, what: str = "") -> None:
    """Return once `condition()` is truthy; fail naming `what` after `timeout_s`. For state
    without an event to wait on (another process, the broker); prefer an event where one exists."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or condition}")
        time.sleep(POLL_S)


def wait_for_retained(
    settings: BrokerSettings, topic: str, accept: Callable[[bytes], object], timeout_s: float = 10
) -> list[bytes]:
    """Subscribe (fresh client) and return the payloads seen until `accept(payload)` is true."""
    seen: list[bytes] = []
    done = threading.Event()
    watcher = make_client(settings, f"watch-{time.monotonic_ns()}")
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        seen.append(bytes(msg.payload))
        if accept(bytes(msg.payload)):
            done.set()

    watcher.on_message = on_message
    start_client(watcher)
    try:
        done.wait(timeout_s)
    finally:
        stop_client(watcher)
    return seen
