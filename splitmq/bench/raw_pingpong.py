"""A bare paho ping-pong: the broker path's own round trip, the baseline of `bench transport`.

Two plain clients made by the project's factory (MQTT v5, TCP_NODELAY): the echoer republishes
every ping, unchanged, to the pong topic from inside its network callback; the pinger publishes
one ping at a time at QoS 1 and waits for its pong. No framing, no JSON, no queue, no thread
handoff beyond paho's own: what is left is paho plus the broker, the least any runtime that
uses them can take.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from splitmq.bench.errors import BenchError


def measure_raw_rtt(
    settings: BrokerSettings,
    *,
    payload_bytes: int,
    requests: int,
    warmup: int,
    timeout_s: float = 10.0,
) -> list[float]:
    """Round trips in ms of `requests` pings of `payload_bytes` at QoS 1 (after `warmup`)."""
    tag = uuid.uuid4().hex[:8]
    ping_topic, pong_topic = f"rawping/{tag}/ping", f"rawping/{tag}/pong"
    echoer = make_client(settings, f"rawping-echo-{tag}")
    pinger = make_client(settings, f"rawping-ping-{tag}")
    got = threading.Event()
    arrived: list[float] = [0.0]
    subscribed = threading.Semaphore(0)

    def echo(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.publish(pong_topic, message.payload, qos=1)

    def pong(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        arrived[0] = time.perf_counter()
        got.set()

    echoer.on_message, pinger.on_message = echo, pong
    echoer.on_subscribe = pinger.on_subscribe = lambda *args: subscribed.release()
    payload = bytes(payload_bytes)
    try:
        for client, topic in ((echoer, ping_topic), (pinger, pong_topic)):
            start_client(client, wait_s=timeout_s)
            client.subscribe(topic, qos=1)
        for _ in range(2):
            if not subscribed.acquire(timeout=timeout_s):
                raise BenchError("no SUBACK for the ping-pong topics")
        samples: list[float] = []
        for i in range(warmup + requests):
            got.clear()
            started = time.perf_counter()
            pinger.publish(ping_topic, payload, qos=1)
            if not got.wait(timeout_s):
                raise BenchError(f"ping {i} got no pong within {timeout_s:g} s")
            if i >= warmup:
                samples.append((arrived[0] - started) * 1000.0)
        return samples
    finally:
        stop_client(pinger)
        stop_client(echoer)
