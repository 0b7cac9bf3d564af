"""Broker passwords from the environment or a secrets file, and TLS failures that say why.

Every connection goes to a real Mosquitto started from a `splitmq broker init` profile (TLS only,
logins required).
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from broker.certificates import make_ca
from broker.launcher import MosquittoBroker, free_port
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.errors import BrokerConnectError, BrokerSettingsError
from mqtt_session.session import MqttSession
from splitmq.monitoring.cli_args import add_watch_arguments, watch_settings
from splitmq_base.configfile import validate_config
from tests.support.secure_site import DEVICES, WAIT_S, SecureSite

pytestmark = pytest.mark.integration  # real brokers, some started by the tests themselves

DEVICE = DEVICES[0]
VAR = "SPLITMQ_TEST_BROKER_PASSWORD"


def _section(site: SecureSite, user: str) -> dict[str, Any]:
    """The user's `broker:` section from `init`, on this broker's port, password taken out."""
    snippet = yaml.safe_load(site.profile.client_file(user).read_text())["broker"]
    snippet.update(host=site.broker.host, port=site.broker.port)
    del snippet["password"]
    return dict(snippet)


def _connects(settings: BrokerSettings) -> bool:
    client = make_client(settings, DEVICE)
    try:
        start_client(client, wait_s=WAIT_S)
    except BrokerConnectError:
        return False
    stop_client(client)
    return True


def _wrong_password_is_refused(site: SecureSite) -> None:
    # Guards the positive tests: the broker really checks the password.
    wrong = BrokerSettings.model_validate({**_section(site, DEVICE), "password": "not-it"})
    assert not _connects(wrong)


def test_password_env_logs_in_and_stays_out_of_logs_and_repr(
    site: SecureSite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = site.profile.users[DEVICE].password
    monkeypatch.setenv(VAR, password)
    settings = BrokerSettings.model_validate({**_section(site, DEVICE), "password_env": VAR})
    with caplog.at_level(logging.DEBUG):
        assert _connects(settings)
    assert password not in caplog.text
    assert password not in repr(settings) and password not in str(settings.model_dump())
    _wrong_password_is_refused(site)


def test_password_file_logs_in_with_its_first_line(site: SecureSite, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(site.profile.users[DEVICE].password + "\nsecond line is ignored\n")
    secret.chmod(0o600)
    settings = BrokerSettings.model_validate({**_section(site, DEVICE), "password_file": secret})
    assert _connects(settings)
    _wrong_password_is_refused(site)


def test_broker_init_writes_a_password_file_each_user_can_log_in_with(site: SecureSite) -> None:
    path = site.profile.password_file(DEVICE)
    assert path.stat().st_mode & 0o777 == 0o600
    user_file = site.profile.client_file(DEVICE).read_text()
    assert f"# password_file: {path.resolve()}" in user_file  # the file says how to switch
    settings = BrokerSettings.model_validate({**_section(site, DEVICE), "password_file": path})
    assert _connects(settings)
    _wrong_password_is_refused(site)


def test_a_password_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    settings = BrokerSettings(username="u", password_file=secret)
    with caplog.at_level(logging.WARNING, logger="mqtt_session.client"):
        assert settings.resolve_password() == "hunter2"
    assert "readable by group or others (mode 644)" in caplog.text
    assert "hunter2" not in caplog.text
    caplog.clear()
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="mqtt_session.client"):
        assert settings.resolve_password() == "hunter2"
    assert caplog.text == ""


def test_an_unset_variable_or_unreadable_file_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(BrokerSettingsError, match=f"password_env: environment variable {VAR}"):
        make_client(BrokerSettings(username="u", password_env=VAR), "c")
    missing = tmp_path / "absent"
    with pytest.raises(BrokerSettingsError, match=r"password_file: cannot read .*absent"):
        make_client(BrokerSettings(username="u", password_file=missing), "c")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(BrokerSettingsError, match=r"password_file: the first line of .* is empty"):
        make_client(BrokerSettings(username="u", password_file=empty), "c")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"username": "u", "password": "p", "password_env": "V"}, "password and password_env"),
        ({"username": "u", "password_env": "V", "password_file": "/f"}, "password_env and pass"),
        ({"password_env": "V"}, "password_env is set but username is not"),
        ({"password_file": "/f"}, "password_file is set but username is not"),
        ({"username": "u", "password_env": ""}, "password_env"),
    ],
)
def test_the_password_is_given_one_way_only_and_with_a_login(
    section: dict[str, Any], expected: str
) -> None:
    with pytest.raises(BrokerSettingsError, match=expected):
        validate_config(
            BrokerSettings, section, what="broker", source="test", error=BrokerSettingsError
        )


def test_monitoring_password_env_flag_is_the_same_setting(
    site: SecureSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = argparse.ArgumentParser()
    add_watch_arguments(parser)
    argv = ["--host", site.broker.host, "--port", str(site.broker.port)]
    args = parser.parse_args([*argv, "--username", DEVICE, "--password-env", VAR])
    settings, _ = watch_settings(args)
    assert settings.password_env == VAR and settings.password is None
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(BrokerSettingsError, match=VAR):
        make_client(settings, DEVICE)
    monkeypatch.setenv(VAR, site.profile.users[DEVICE].password)
    # The monitor user's file has the TLS settings; the flags do not (the monitor CLIs set none).
    tls = BrokerSettings.model_validate(_section(site, DEVICE)).tls
    assert _connects(settings.model_copy(update={"tls": tls}))


# -- TLS failures ----------------------------------------------------------------------------------


def _other_ca(path: Path) -> Path:
    path.write_bytes(make_ca("not the broker's CA").cert.public_bytes(serialization.Encoding.PEM))
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def messages(self, level: int) -> list[str]:
        with self.changed:
            return [r.getMessage() for r in self.records if r.levelno == level]


def test_a_wrong_ca_is_reported_as_certificate_verify_failed_once_per_cause(
    site: SecureSite, tmp_path: Path
) -> None:
    section = _section(site, DEVICE)
    section["password"] = site.profile.users[DEVICE].password
    section["tls"] = {**section["tls"], "ca_certs": _other_ca(tmp_path / "other-ca.crt")}
    section.update(reconnect_min_delay_s=1, reconnect_max_delay_s=1)
    settings = BrokerSettings.model_validate(section)
    records = _Records()
    logger = logging.getLogger("splitmq.mqtt")
    logger.addHandler(records)
    client = make_client(settings, DEVICE)
    try:
        start_client(client, wait_s=None)
        with records.changed:  # three attempts, each with its retry line
            assert records.changed.wait_for(
                lambda: len([r for r in records.records if r.levelno == logging.WARNING]) >= 3,
                WAIT_S,
            )
    finally:
        client.loop_stop()
        logger.removeHandler(records)
    retries = records.messages(logging.WARNING)
    assert all("certificate verify failed" in line for line in retries), retries
    errors = records.messages(logging.ERROR)
    assert len(errors) == 1, errors
    where = f"no TLS connection to the MQTT broker at {site.broker.host}:{site.broker.port}"
    # Mosquitto sends its CA along, so OpenSSL says "self-signed certificate in certificate chain".
    assert errors[0].startswith(f"{where}: certificate verify failed: "), errors[0]
    assert "broker.tls.ca_certs must be the CA" in errors[0]


def test_a_session_that_gives_up_quotes_the_tls_cause(site: SecureSite, tmp_path: Path) -> None:
    section = _section(site, DEVICE)
    section["password"] = site.profile.users[DEVICE].password
    right = BrokerSettings.model_validate(section)
    assert _connects(right)  # the right CA connects
    section["tls"] = {**section["tls"], "ca_certs": _other_ca(tmp_path / "other-ca.crt")}
    session = MqttSession(BrokerSettings.model_validate(section), client_id=DEVICE)
    with pytest.raises(BrokerConnectError, match="last attempt: certificate verify failed"):
        session.start(wait_s=2)


def test_a_closed_port_is_reported_as_connection_refused(site: SecureSite) -> None:
    section = _section(site, DEVICE)
    section.update(password="x", port=free_port(site.broker.host))
    client = make_client(BrokerSettings.model_validate(section), DEVICE)
    with pytest.raises(BrokerConnectError, match=r"last attempt: connection refused\)"):
        start_client(client, wait_s=2)


def test_a_tls_client_on_a_plain_listener_reports_a_handshake_failure(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    settings = BrokerSettings.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "tls": {"ca_certs": _other_ca(tmp_path / "ca.crt")},
        }
    )
    client: mqtt.Client = make_client(settings, "tls-on-plain")
    with pytest.raises(BrokerConnectError, match="last attempt: TLS handshake failed: "):
        start_client(client, wait_s=2)


def test_a_host_not_in_the_brokers_certificate_is_reported_as_a_hostname_mismatch(
    site: SecureSite,
) -> None:
    # The profile's certificate names 127.0.0.1 and localhost; the same broker on 127.0.0.2 is
    # the right CA under a name the certificate lacks.
    with MosquittoBroker(config_template=site.profile.config, host="127.0.0.2") as other:
        section = _section(site, DEVICE)
        section.update(host=other.host, port=other.port)
        section["password"] = site.profile.users[DEVICE].password
        client = make_client(BrokerSettings.model_validate(section), DEVICE)
        mismatch = "certificate verify failed: IP address mismatch, certificate is not valid for"
        with pytest.raises(BrokerConnectError, match=re.escape(f"{mismatch} '127.0.0.2'")):
            start_client(client, wait_s=2)
