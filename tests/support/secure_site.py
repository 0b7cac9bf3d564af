"""A real Mosquitto started from a `splitmq broker init` profile, and logins for its users.

Shared by test_secure_profile.py and test_secure_profile_attacks.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from broker.launcher import MosquittoBroker
from broker.secure_profile import ProfileOptions, SecureProfile, init_profile
from edge_worker.config import WorkerConfig, load_worker_config, with_overrides
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from schemas.topics import Topics

TOPICS = Topics()
DEVICES = ("cam-1", "cam-2")
WORKER = "w1"
MONITOR = "mon"
WAIT_S = 10.0


@dataclass
class SecureSite:
    profile: SecureProfile
    broker: MosquittoBroker

    def settings(self, user: str, **changes: Any) -> BrokerSettings:
        """The `broker:` section `init` wrote for `user`, pointed at this broker's port (a
        dict as `tls` in `changes` updates the TLS section; None removes it)."""
        snippet = yaml.safe_load(self.profile.client_file(user).read_text())["broker"]
        if isinstance(changes.get("tls"), dict):
            changes["tls"] = {**snippet["tls"], **changes["tls"]}
        snippet.update(host=self.broker.host, port=self.broker.port, **changes)
        return BrokerSettings.model_validate(snippet)

    def worker_config(self, user: str = WORKER) -> WorkerConfig:
        """The worker's own file from `init`, serving the echo model on this broker."""
        config = load_worker_config(self.profile.client_file(user))
        return with_overrides(
            config,
            {
                "broker": {"host": self.broker.host, "port": self.broker.port},
                "models": [{"name": "echo"}],
                "runner": "echo",
                "device": "cpu",
            },
        )


@contextmanager
def open_site(options: ProfileOptions) -> Iterator[SecureSite]:
    """A profile written with `options` and a real Mosquitto running it."""
    # Under a directory the broker's unprivileged account can pass (the launcher drops root).
    base = Path(tempfile.mkdtemp(prefix="splitmq-site-"))
    os.chmod(base, 0o711)
    try:
        profile = init_profile(base / "profile", options)
        with MosquittoBroker(config_template=profile.config) as broker:
            yield SecureSite(profile, broker)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[SecureSite]:
    with open_site(ProfileOptions(devices=DEVICES, workers=[WORKER], monitors=[MONITOR])) as made:
        yield made


class Probe:
    """A raw paho client that records SUBACK and PUBACK reason codes and what it receives."""

    def __init__(self, settings: BrokerSettings, client_id: str) -> None:
        self.client = make_client(settings, client_id)
        self.messages: list[mqtt.MQTTMessage] = []
        self.disconnects = 0
        self._subacks: dict[int, list[str]] = {}
        self._pubacks: dict[int, str] = {}
        self._changed = threading.Condition()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> Probe:
        start_client(self.client, wait_s=WAIT_S)
        return self

    def stop(self) -> None:
        stop_client(self.client)

    def subscribe(self, *topic_filters: str) -> list[str]:
        """SUBSCRIBE and wait for the SUBACK: one reason per filter ("Granted QoS 1", ...)."""
        result, mid = self.client.subscribe([(f, 1) for f in topic_filters])
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        return self._wait(self._subacks, mid)

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> str:
        """Publish at QoS 1 and wait for the PUBACK: its reason ("Success", "Not authorized")."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._wait(self._pubacks, info.mid)

    def received(self, topic: str) -> list[bytes]:
        with self._changed:
            return [bytes(m.payload) for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, payload: bytes) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: payload in self.received_locked(topic), WAIT_S)
        assert ok, f"{payload!r} never arrived on {topic}"

    def received_locked(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if m.topic == topic]

    def _wait(self, table: dict[int, Any], mid: int) -> Any:
        with self._changed:
            assert self._changed.wait_for(lambda: mid in table, WAIT_S), "no acknowledgement"
            return table.pop(mid)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        with self._changed:
            self._subacks[mid] = [str(code) for code in codes]
            self._changed.notify_all()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, code: Any, props: Any
    ) -> None:
        with self._changed:
            self._pubacks[mid] = str(code)
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        with self._changed:
            self.disconnects += 1
            self._changed.notify_all()
