"""monitor, exporter's connection and homeassistant against the TLS-only broker of
`splitmq broker init`, configured from the files it writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.launcher import MosquittoBroker
from broker.secure_profile import ProfileOptions, SecureProfile, init_profile
from mqtt_session.client import BrokerSettings
from schemas.discovery import discovery_config_topic, discovery_status_topic
from splitmq.cli import main
from splitmq_base.cli import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME
from tests.support.secure_site import Probe

pytestmark = pytest.mark.integration
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """The commands run in-process install their own SIGINT/SIGTERM/SIGHUP handlers."""
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@dataclass
class Site:
    profile: SecureProfile
    broker: MosquittoBroker

    def args(self, user: str) -> list[str]:
        """--config of `user`'s file, pointed at this broker's port."""
        return ["--config", str(self.profile.client_file(user)), "--port", str(self.broker.port)]

    def settings(self, user: str) -> BrokerSettings:
        from mqtt_session.options import load_client_config

        config = load_client_config(self.profile.client_file(user))
        return config.broker.model_copy(update={"port": self.broker.port})


@pytest.fixture
def site() -> Iterator[Site]:
    base = Path(tempfile.mkdtemp(prefix="splitmq-watch-"))
    os.chmod(base, 0o711)  # the broker's unprivileged account must pass through
    try:
        options = ProfileOptions(monitors=["mon"], homeassistants=["ha"], devices=["cam-1"])
        profile = init_profile(base / "profile", options)
        with MosquittoBroker(config_template=profile.config) as broker:
            yield Site(profile, broker)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_monitor_reads_the_monitor_file_of_broker_init(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", *site.args("mon"), "--once", "--json"]) == EXIT_OK
    snapshot = json.loads(capsys.readouterr().out)
    assert set(snapshot) >= {"workers", "devices", "broker"}


def test_plain_mqtt_to_the_tls_port_says_so_at_once(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    argv = ["monitor", "--port", str(site.broker.port), "--username", "mon", "--once"]
    assert main(argv) == EXIT_RUNTIME
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("splitmq monitor: error: no MQTT connection")
    assert "TLS listener" in error and "--tls-ca" in error
    assert time.monotonic() - started < 8  # not the full 10 s wait


def test_home_assistants_login_publishes_its_birth_the_monitors_does_not(site: Site) -> None:
    birth = discovery_status_topic("homeassistant")
    ha = Probe(site.settings("ha"), "ha").start()
    monitor = Probe(site.settings("mon"), "mon").start()
    try:
        assert ha.subscribe(birth) == ["Granted QoS 1"]  # Home Assistant reads it back
        assert ha.publish(birth, b"online") == "Success"
        ha.wait_for(birth, b"online")
        assert monitor.publish(birth, b"online") == "Not authorized"
    finally:
        ha.stop()
        monitor.stop()


def test_homeassistant_remove_with_the_home_assistant_login(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["homeassistant", "remove", *site.args("ha"), "cam-1"]) == EXIT_OK
    assert f"removed cam-1 ({discovery_config_topic('homeassistant', 'cam-1')})" in (
        capsys.readouterr().out
    )


def test_homeassistant_remove_with_a_read_only_login_is_refused_in_one_line(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["homeassistant", "remove", *site.args("mon"), "-q", "cam-1"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert "removed" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "--homeassistant NAME" in lines[0]
