"""Strict configuration: no booleans for numbers, no ignored flags, the dotted key path in every
error, and one exit code (EXIT_CONFIG) for every configuration error of every CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_node.cli import main as device_main
from device_node.config import (
    DynamicPolicyConfig,
    RegisteredPolicyConfig,
    device_config_from_mapping,
    load_device_config,
)
from device_node.errors import ConfigError as DeviceConfigError
from edge_worker.cli import main as worker_main
from edge_worker.config import load_worker_config
from edge_worker.errors import ConfigError as WorkerConfigError
from mqtt_session.client import BrokerSettings
from splitmq.cli import main as splitmq_main
from splitmq_base.cli import EXIT_CONFIG
from splitting.policy import DynamicSplit
from tests.support.toy_model import toy_device


def _error_line(message: str, key: str) -> str:
    """The report line about `key` (each bad key gets one line: `  <dotted.key>: <reason>`)."""
    lines = [line.strip() for line in message.splitlines()]
    found = [line for line in lines if line.startswith(f"{key}: ")]
    assert found, f"no line for {key!r} in:\n{message}"
    return found[0]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("broker: {port: true}\n", "broker.port"),
        ("broker: {keepalive: false}\n", "broker.keepalive"),
        ("broker: {reconnect_max_delay_s: true}\n", "broker.reconnect_max_delay_s"),
        ("policy: {kind: fixed, split: true}\n", "policy.split"),
        ("requests: true\n", "requests"),
        ("jpeg_quality: true\n", "jpeg_quality"),
        ("deadline_ms: true\n", "deadline_ms"),
        ("rate_hz: true\n", "rate_hz"),
        ("probe: {max_bytes: true}\n", "probe.max_bytes"),
        ("probe: {enabled: 1}\n", "probe.enabled"),
        ("homeassistant: {enabled: 1}\n", "homeassistant.enabled"),
        ("torch_threads: true\n", "torch_threads"),
    ],
)
def test_device_yaml_refuses_a_boolean_for_a_number_and_a_number_for_a_boolean(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("device_id: cam\n" + text)
    with pytest.raises(DeviceConfigError) as error:
        load_device_config(path)
    assert str(path) in str(error.value)
    _error_line(str(error.value), key)


def test_a_boolean_for_an_integer_says_what_it_got(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("device_id: cam\nbroker: {port: true}\n")
    with pytest.raises(DeviceConfigError) as error:
        load_device_config(path)
    line = _error_line(str(error.value), "broker.port")
    assert "true" in line and "integer" in line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_batch: true\n", "max_batch"),
        ("queue_capacity: false\n", "queue_capacity"),
        ("max_wait_ms: true\n", "max_wait_ms"),
        ("broker: {port: true}\n", "broker.port"),
        ("models: [{name: m, splits: [true, 2]}]\n", "models.0.splits.0"),
        ("frame_limits: {max_ndim: true}\n", "frame_limits.max_ndim"),
        ("telemetry_interval_s: true\n", "telemetry_interval_s"),
    ],
)
def test_worker_yaml_refuses_a_boolean_for_a_number(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    _error_line(str(error.value), key)


def test_numbers_and_paths_keep_loading_from_yaml(tmp_path: Path) -> None:
    # Strictness must not refuse what YAML naturally gives: ints for floats, lists for tuples,
    # strings for paths and secrets.
    ca = tmp_path / "ca.pem"
    config = device_config_from_mapping(
        {
            "device_id": "cam",
            "deadline_ms": 500,
            "codecs": ["int8"],
            "trace": "uplink.trace",
            "broker": {"username": "u", "password": "p", "tls": {"ca_certs": str(ca)}},
            "policy": {"options": {"half_life_s": 3, "server_profile": "server.json"}},
        }
    )
    assert config.deadline_ms == 500.0 and config.codecs == ("int8",)
    assert config.trace == Path("uplink.trace")
    assert config.broker.password is not None and config.broker.password.get_secret_value() == "p"
    assert config.broker.tls is not None and config.broker.tls.ca_certs == ca
    assert isinstance(config.policy, DynamicPolicyConfig)
    assert config.policy.options.half_life_s == 3.0
    assert config.policy.options.server_profile == Path("server.json")


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ("{race_above: 2}", "policy.options.race_above", "less than or equal to 1"),
        ("{race_above: true}", "policy.options.race_above", "true"),
        ("{race_abov: 0.1}", "policy.options.race_abov", "unknown key"),
        ("{race: sometimes}", "policy.options.race", "'off'"),
        ("{half_life_s: 0}", "policy.options.half_life_s", "greater than 0"),
        ("{pin: -1}", "policy.options.pin", "greater than or equal to 0"),
        ("{rate_mode: mean}", "policy.options.rate_mode", "'decayed'"),
    ],
)
def test_dynamic_policy_options_are_checked_with_their_dotted_path(
    tmp_path: Path, options: str, key: str, words: str
) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(f"device_id: cam\npolicy:\n  kind: dynamic\n  options: {options}\n")
    with pytest.raises(DeviceConfigError) as error:
        load_device_config(path)
    assert words in _error_line(str(error.value), key)


def test_a_fixed_policy_takes_no_options() -> None:
    with pytest.raises(DeviceConfigError) as error:
        device_config_from_mapping(
            {"device_id": "cam", "policy": {"kind": "fixed", "options": {"race": "auto"}}}
        )
    assert "takes no options" in _error_line(str(error.value), "policy.options")


def test_dynamic_options_from_yaml_reach_the_built_policy(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(
        "device_id: cam\npolicy:\n  options: {race: auto, race_above: 0.2, one_way_ms: 7}\n"
    )
    config = load_device_config(path)
    assert isinstance(config.policy, DynamicPolicyConfig)
    policy = DynamicSplit(toy_device(), config.policy.options)
    assert (policy.race, policy.race_above) == ("auto", 0.2)
    assert policy.options.one_way_ms == 7.0 and policy.options.half_life_s == 2.0


def test_an_unknown_policy_kind_keeps_its_options_for_its_factory() -> None:
    config = device_config_from_mapping(
        {"device_id": "cam", "policy": {"kind": "oracle", "options": {"lookahead": 3}}}
    )
    assert isinstance(config.policy, RegisteredPolicyConfig)
    assert config.policy.options == {"lookahead": 3}


def test_a_policy_kind_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(DeviceConfigError) as error:
        device_config_from_mapping({"device_id": "cam", "policy": {"kind": 3}})
    assert "registered kind" in _error_line(str(error.value), "policy")


def test_broker_settings_refuse_a_boolean_port() -> None:
    with pytest.raises(ValueError, match="port"):
        BrokerSettings.model_validate({"port": True})


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
@pytest.mark.parametrize("prog", ["device", "worker", "broker"])
def test_a_port_flag_outside_1_to_65535_is_refused_by_every_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prog: str, port: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("device_id: cam\n" if prog == "device" else "runner: echo\n")
    args = [prog, "--config", str(config)] if prog != "broker" else [prog]
    with pytest.raises(SystemExit) as exited:
        splitmq_main([*args, f"--port={port}"])
    assert exited.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--port" in err and "1..65535" in err


def test_device_node_refuses_port_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "device.yaml"
    config.write_text("device_id: cam\n")
    with pytest.raises(SystemExit) as exited:
        device_main(["--config", str(config), "--port", "0"])
    assert exited.value.code == EXIT_CONFIG
    assert "--port" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prog", "text"),
    [
        ("device", "device_id: cam\nbroker: {port: true}\n"),
        ("device", "device_id: cam\npolicy: {options: {race_above: 2}}\n"),
        ("device", "device_id: cam\nsplt: 1\n"),
        ("device", "device_id: [unclosed\n"),
        ("worker", "max_batch: true\n"),
        ("worker", "runner: echo\nmodels: [{name: m, splits: [true]}]\n"),
    ],
)
def test_every_configuration_error_exits_with_the_config_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prog: str, text: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    main = device_main if prog == "device" else worker_main
    assert main(["--config", str(config)]) == EXIT_CONFIG
    assert splitmq_main([prog, "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_a_split_list_with_a_boolean_reports_both_readings_of_the_key(tmp_path: Path) -> None:
    # `splits` is "all", "candidates" or a list: the report names the key, not pydantic's
    # union members ("models.0.splits.list[int].0").
    path = tmp_path / "worker.yaml"
    path.write_text("models: [{name: m, splits: [true]}]\n")
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    assert "[" not in "".join(line.split(":")[0] for line in str(error.value).splitlines()[1:])
    assert "got true" in _error_line(str(error.value), "models.0.splits.0")


def test_an_unknown_key_is_named_as_written(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("broker: {int: 1, 'port number': 2}\n")
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    assert "unknown key" in _error_line(str(error.value), "broker.int")
    assert "unknown key" in _error_line(str(error.value), "broker.port number")
