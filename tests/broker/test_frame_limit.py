"""The site's frame limit is the broker's: one setting renders message_size_limit (and
max_packet_size above it) into every shipped config, and the real broker refuses a frame over
it with a PUBACK reason code, delivering nothing, while a frame at the limit passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.launcher import (
    DEFAULT_CONFIG,
    PACKAGE_DIR,
    SECURE_CONFIG,
    MosquittoBroker,
    render_config,
    size_limits,
)
from broker.secure_profile import ProfileOptions, render_broker_config
from edge_worker.config import FrameLimitsConfig
from mqtt_session.client import (
    PACKET_TOO_LARGE,
    BrokerSettings,
    make_client,
    start_client,
    stop_client,
)
from schemas.frame import FrameLimits

pytestmark = pytest.mark.integration

SITE_CONFIG = PACKAGE_DIR / "mosquitto-site.conf"
PLACEHOLDERS = {
    "port": "1",
    "bind_address": "127.0.0.1",
    "password_file": "/p",
    "acl_file": "/a",
    "central_host": "h",
    "central_port": "2",
    "prefix": "splitmq",
    "site": "s",
}


def _sizes(text: str) -> tuple[int, int]:
    options = dict(
        line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    return int(options["message_size_limit"]), int(options["max_packet_size"])


@pytest.mark.parametrize("template", [DEFAULT_CONFIG, SECURE_CONFIG, SITE_CONFIG])
def test_every_shipped_config_renders_the_frame_limit(template: Path) -> None:
    limit = FrameLimits().max_frame_bytes
    assert FrameLimitsConfig().max_frame_bytes == limit  # the worker's default
    message, packet = _sizes(render_config(template, {**PLACEHOLDERS, **size_limits()}))
    assert message == limit
    assert packet == 8 * limit  # the outer bound: oversized frames up to it are refused politely
    raised = _sizes(render_config(template, {**PLACEHOLDERS, **size_limits(3 * limit)}))
    assert raised[0] == 3 * limit


def test_broker_init_writes_its_own_frame_limit(tmp_path: Path) -> None:
    default = render_broker_config(tmp_path, plugin="/x.so")
    assert _sizes(default)[0] == FrameLimits().max_frame_bytes
    raised = ProfileOptions(devices=["d"], max_frame_bytes=32 * 1024 * 1024)
    text = render_broker_config(tmp_path, plugin="/x.so", max_frame_bytes=raised.max_frame_bytes)
    assert _sizes(text)[0] == 32 * 1024 * 1024
    assert "${message_size_limit}" not in text and "${port}" in text


class _Publisher:
    """A v5 client that records each PUBACK's reason code and every disconnect."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.acks: dict[int, int] = {}
        self.disconnects = 0
        self._acked = threading.Condition()
        self.client = make_client(settings, "limit-pub")
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        start_client(self.client)

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        with self._acked:
            self.acks[mid] = int(getattr(rc, "value", 0))
            self._acked.notify_all()

    def _on_disconnect(self, *args: object) -> None:
        self.disconnects += 1

    def publish(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> int | None:
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._acked:
            self._acked.wait_for(lambda: mid in self.acks, timeout_s)
        return self.acks.get(mid)


def _subscriber(settings: BrokerSettings, topic: str) -> tuple[mqtt.Client, list[int]]:
    sizes: list[int] = []
    subscribed = threading.Event()
    sub = make_client(settings, "limit-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    sub.on_message = lambda c, u, msg: sizes.append(len(msg.payload))
    start_client(sub)
    assert subscribed.wait(5)
    return sub, sizes


def test_shipped_broker_refuses_a_frame_over_the_limit_and_passes_one_at_it(
    broker: MosquittoBroker, broker_settings: BrokerSettings
) -> None:
    limit = FrameLimits().max_frame_bytes
    sub, received = _subscriber(broker_settings, "t/frames")
    pub = _Publisher(broker_settings)
    try:
        assert pub.publish("t/frames", bytes(limit)) == 0
        assert pub.publish("t/frames", bytes(limit + 1)) == PACKET_TOO_LARGE
        assert pub.publish("t/frames", b"x") == 0  # same connection, still up
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # room for a wrong delivery to show up
        assert received == [limit, 1]
        assert pub.disconnects == 0
    finally:
        stop_client(pub.client)
        stop_client(sub)


def test_a_packet_far_over_the_limit_disconnects_its_sender(
    broker: MosquittoBroker, broker_settings: BrokerSettings
) -> None:
    pub = _Publisher(broker_settings)
    try:
        pub.client.publish("t/huge", bytes(8 * FrameLimits().max_frame_bytes + 1), qos=1)
        deadline = time.monotonic() + 5
        while pub.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pub.disconnects >= 1
        assert "oversize packet" in broker.log_text()
    finally:
        stop_client(pub.client)


def test_launcher_setting_drives_the_running_broker() -> None:
    limit = 64 * 1024
    with MosquittoBroker(max_frame_bytes=limit) as small:
        settings = BrokerSettings(host=small.host, port=small.port)
        pub = _Publisher(settings)
        try:
            accepted = pub.publish("t/x", bytes(limit))  # 16: taken, but no one subscribes
            assert accepted is not None and accepted < 0x80
            assert pub.publish("t/x", bytes(limit + 1)) == PACKET_TOO_LARGE
        finally:
            stop_client(pub.client)
