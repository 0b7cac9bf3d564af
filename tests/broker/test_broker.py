"""The launcher starts a real Mosquitto with the project's config; clients talk through it."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.errors import BrokerConfigError, BrokerStartError, MosquittoNotFoundError
from broker.launcher import (
    DEFAULT_CONFIG,
    SECURE_CONFIG,
    MosquittoBroker,
    find_mosquitto,
    port_accepts,
)
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from schemas.frame import FrameLimits

pytestmark = pytest.mark.integration


def _settings(broker: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=1)


def _round_trip(settings: BrokerSettings, topic: str, payload: bytes) -> bytes:
    """Publish once at QoS 1 and return what a subscriber received."""
    subscribed = threading.Event()
    received: list[bytes] = []
    got = threading.Event()

    sub = make_client(settings, "rt-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    sub.on_message = on_message
    start_client(sub)
    pub = make_client(settings, "rt-pub")
    start_client(pub)
    try:
        assert subscribed.wait(5)
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
        assert got.wait(5), "message not delivered"
    finally:
        stop_client(pub)
        stop_client(sub)
    return received[0]


def test_broker_fixture_runs_mosquitto_with_project_config(broker: MosquittoBroker) -> None:
    assert broker.is_running()
    assert broker.port != 1883
    assert port_accepts(broker.host, broker.port)
    rendered = broker.config_path.read_text()
    assert f"listener {broker.port} 127.0.0.1" in rendered
    assert "set_tcp_nodelay true" in rendered
    assert "${" not in rendered
    assert "mosquitto version" in broker.log_text()


def test_messages_flow_through_the_broker(broker: MosquittoBroker) -> None:
    assert _round_trip(_settings(broker), "t/hello", b"payload") == b"payload"


def test_frame_at_the_limit_passes(broker: MosquittoBroker) -> None:
    # A frame of FrameLimits.max_frame_bytes must pass message_size_limit and max_packet_size.
    payload = bytes(range(256)) * (FrameLimits().max_frame_bytes // 256)
    assert _round_trip(_settings(broker), "t/big", payload) == payload


def test_restart_keeps_port_and_clients_reconnect(broker: MosquittoBroker) -> None:
    settings = _settings(broker)
    port = broker.port
    connects: list[int] = []
    client = make_client(settings, "restart-watch")
    client.on_connect = lambda c, u, f, rc, p: connects.append(1)
    start_client(client)
    try:
        broker.restart()
        assert broker.port == port and broker.is_running()
        deadline = threading.Event()
        for _ in range(100):
            if len(connects) >= 2 and client.is_connected():
                break
            deadline.wait(0.05)
        assert len(connects) >= 2, "client did not reconnect after the broker restart"
        assert _round_trip(settings, "t/after", b"x") == b"x"
    finally:
        stop_client(client)


def test_stop_then_start_again() -> None:
    broker = MosquittoBroker()
    with broker:
        port = broker.port
        broker.stop()
        assert not broker.is_running()
        assert not port_accepts(broker.host, port)
        broker.start()
        assert broker.port == port and port_accepts(broker.host, port)
    assert not broker.is_running()


def test_port_1883_is_refused() -> None:
    with pytest.raises(BrokerConfigError, match="1883"):
        MosquittoBroker(port=1883)


def test_taken_port_reports_the_broker_log() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerStartError, match="Address already in use"):
            MosquittoBroker(port=port).start()


def test_unknown_option_is_refused_by_mosquitto(tmp_path: Path) -> None:
    template = tmp_path / "bad.conf"
    template.write_text("listener ${port} ${bind_address}\nnot_an_option 1\n")
    with pytest.raises(BrokerStartError, match="not_an_option"):
        MosquittoBroker(config_template=template).start()


def test_template_placeholder_without_value_is_named(tmp_path: Path) -> None:
    template = tmp_path / "t.conf"
    template.write_text("listener ${port} ${bind_address}\npassword_file ${password_file}\n")
    with pytest.raises(BrokerConfigError, match=r"password_file.*splitmq broker init DIR"):
        MosquittoBroker(config_template=template).start()


def test_missing_binary_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.programs.shutil.which", lambda name: None)
    monkeypatch.setattr("broker.launcher.SBIN_DIRS", ("/nonexistent/sbin",))
    with pytest.raises(MosquittoNotFoundError, match="apt-get install mosquitto") as info:
        find_mosquitto()
    assert "brew install mosquitto" in str(info.value)


def _settings_of(path: Path) -> dict[str, str]:
    """Option -> value lines of a config, comments and the listener/auth section left out."""
    options: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        options[f"{key} {value}" if key == "log_type" else key] = value
    return options


def test_secure_config_has_the_same_tuning() -> None:
    plain, secure = _settings_of(DEFAULT_CONFIG), _settings_of(SECURE_CONFIG)
    auth = {"allow_anonymous", "password_file", "acl_file"}
    assert {k: v for k, v in plain.items() if k not in auth} == {
        k: v for k, v in secure.items() if k not in auth
    }
    assert secure["allow_anonymous"] == "false"


def test_config_sets_what_the_workload_needs(broker: MosquittoBroker) -> None:
    options = _settings_of(broker.config_path)
    assert options["set_tcp_nodelay"] == "true"
    assert options["persistence"] == "false"
    # The transport benchmark's 5,000-request burst must fit in one worker's broker-side queue.
    assert int(options["max_queued_messages"]) >= 5000
    assert int(options["max_queued_bytes"]) >= 5000 * 16 * 1024
    # A maximal frame (FrameLimits.max_frame_bytes) passes, plus its topic and properties.
    assert int(options["message_size_limit"]) == FrameLimits().max_frame_bytes
    assert int(options["max_packet_size"]) > FrameLimits().max_frame_bytes
