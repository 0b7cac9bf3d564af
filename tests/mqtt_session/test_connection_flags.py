"""One way to connect: every command that talks to a broker has the same connection flags, and
they override the `broker:` section of its config key by key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from broker.access import role_rules
from broker.secure_profile import ProfileOptions, init_profile
from device_node.cli import build_parser as device_parser
from edge_worker.cli import add_worker_arguments
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerSettingsError
from mqtt_session.options import (
    ClientConfig,
    add_connection_arguments,
    load_client_config,
    with_connection_flags,
)
from schemas.discovery import discovery_config_topic, discovery_status_topic
from splitmq.cli import build_parser
from splitmq.monitoring.cli_args import add_watch_arguments, watch_target

FLAGS = {
    "--host",
    "--port",
    "--username",
    "--password-file",
    "--password-env",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
}


def _subcommand(*path: str) -> argparse.ArgumentParser:
    parser = build_parser(list(path))
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize(
    "path",
    [("monitor",), ("exporter",), ("homeassistant", "remove"), ("worker",), ("device",)],
)
def test_every_command_that_talks_to_a_broker_has_the_same_connection_flags(
    path: tuple[str, ...],
) -> None:
    options = set(_subcommand(*path)._option_string_actions)
    assert options >= {*FLAGS, "--config"}


def test_the_standalone_entry_points_have_them_too() -> None:
    worker = argparse.ArgumentParser()
    add_worker_arguments(worker)
    assert set(worker._option_string_actions) >= FLAGS
    assert set(device_parser()._option_string_actions) >= FLAGS


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_override_the_section_key_by_key(tmp_path: Path) -> None:
    section = BrokerSettings(
        host="broker.lan", port=8883, username="mon", password="secret", keepalive=7
    )
    ca = tmp_path / "ca.crt"
    merged = with_connection_flags(section, _flags("--port", "18883", "--tls-ca", str(ca)))
    assert (merged.host, merged.port, merged.username, merged.keepalive) == (
        "broker.lan",
        18883,
        "mon",
        7,
    )
    assert merged.tls is not None and merged.tls.ca_certs == ca
    assert merged.resolve_password() == "secret"


def test_a_password_flag_replaces_the_files_password() -> None:
    section = BrokerSettings(username="mon", password="secret")
    merged = with_connection_flags(section, _flags("--password-env", "MON_PASSWORD"))
    assert merged.password is None and merged.password_env == "MON_PASSWORD"


def test_a_tls_key_without_a_certificate_is_a_configuration_error() -> None:
    with pytest.raises(BrokerSettingsError, match=r"tls\.keyfile is set but tls\.certfile is not"):
        with_connection_flags(BrokerSettings(), _flags("--tls-key", "k.pem"))


def test_no_flags_keep_the_section_as_it_is() -> None:
    section = BrokerSettings(host="h", port=2)
    assert with_connection_flags(section, _flags()) is section


def test_the_monitor_file_of_broker_init_is_a_config_the_watchers_read(tmp_path: Path) -> None:
    profile = init_profile(
        tmp_path / "p", ProfileOptions(monitors=["mon"], prefix="site", discovery_prefix="ha")
    )
    path = profile.client_file("mon")
    text = path.read_text()
    assert "worker_id" not in text and "device_id" not in text
    assert f"splitmq monitor --config {path.resolve()}" in text
    config = load_client_config(path)
    assert config.broker.username == "mon" and config.broker.tls is not None
    assert (config.topic_prefix, config.discovery_prefix) == ("site", "ha")

    parser = argparse.ArgumentParser()
    add_watch_arguments(parser)
    target = watch_target(parser.parse_args(["--config", str(path), "--port", "18883"]))
    assert target.settings.port == 18883 and target.settings.tls == config.broker.tls
    assert target.topics.prefix == "site" and target.discovery_prefix == "ha"


def test_the_home_assistant_file_of_broker_init_is_a_client_config(tmp_path: Path) -> None:
    profile = init_profile(tmp_path / "p", ProfileOptions(homeassistants=["ha"]))
    text = profile.client_file("ha").read_text()
    assert "splitmq homeassistant remove --config" in text
    assert load_client_config(profile.client_file("ha")).broker.username == "ha"


def test_a_client_config_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "mon.yaml"
    path.write_text(yaml.safe_dump({"broker": {"hots": "x"}}))
    with pytest.raises(BrokerSettingsError, match=r"broker\.hots: unknown key"):
        load_client_config(path)
    assert ClientConfig().broker.port == 1883


def test_home_assistants_login_may_publish_its_birth_message_and_withdraw_nodes() -> None:
    def writes(role: str, topic: str) -> bool:
        rules = role_rules(role, "n", discovery_prefix="ha")  # type: ignore[arg-type]
        return any(rule.access == "write" and _matches(rule.pattern, topic) for rule in rules)

    birth, config = discovery_status_topic("ha"), discovery_config_topic("ha", "cam-1")
    assert writes("homeassistant", birth) and writes("homeassistant", config)
    assert not writes("monitor", birth) and not writes("monitor", config)
    assert not writes("homeassistant", "splitmq/status/cam-1")


def _matches(pattern: str, topic: str) -> bool:
    import paho.mqtt.client as mqtt

    return mqtt.topic_matches_sub(pattern, topic)
