"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON Schema (tests/data), or
by `docker compose config` where that client exists. Each splitmq service's command is parsed by
the same CLI parsers and its config file validated by the same loaders the processes use, and the
broker service's configuration, made the way its container makes it, is run by a real Mosquitto.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from broker.launcher import find_mosquitto, free_port, port_accepts, size_limits
from device_node import cli as device_cli
from edge_worker import cli as worker_cli
from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from splitmq.cli import build_parser
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


@pytest.mark.integration  # runs `docker compose config` where Docker is installed
def test_compose_file_satisfies_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(compose())
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:  # fmt: skip
        done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_compose_runs_the_broker_workers_devices_and_exporter() -> None:
    services = compose()["services"]
    assert set(services) == {"broker", "worker", "device", "exporter"}
    assert services["broker"]["image"].startswith("eclipse-mosquitto:2")
    assert services["worker"]["build"]["context"] == "."
    # Scaling needs no fixed container names or host ports on the scaled services.
    for name in ("worker", "device"):
        assert "container_name" not in services[name] and "ports" not in services[name]


def service_argv(service: dict[str, Any]) -> list[str]:
    """The argv a service runs: its command, or the `exec ...` inside `sh -c`, with the
    container's host name standing in for `$(hostname)`."""
    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        script = command[2].replace("$$(hostname)", "c0ffee123456")
        return shlex.split(script.removeprefix("exec "))
    return list(command)


def test_worker_and_device_commands_load_their_configs() -> None:
    services = compose()["services"]
    worker_argv = service_argv(services["worker"])
    assert worker_argv[0] == "edge-worker"
    parser = argparse.ArgumentParser()
    worker_cli.add_worker_arguments(parser)
    worker = worker_cli.config_from_args(parser.parse_args(worker_argv[1:]))
    assert worker.broker.host == "broker" and worker.worker_id == "worker-c0ffee123456"
    device_argv = service_argv(services["device"])
    assert device_argv[0] == "device-node"
    device = device_cli.config_from_args(device_cli.build_parser().parse_args(device_argv[1:]))
    assert device.broker.host == "broker" and device.device_id == "device-c0ffee123456"


def test_exporter_command_parses() -> None:
    argv = service_argv(compose()["services"]["exporter"])
    assert argv[0] == "splitmq"
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert (args.command, args.host, args.port, args.listen) == (
        "exporter", "broker", 1883, "0.0.0.0:9810")  # fmt: skip


@pytest.mark.integration  # starts Mosquitto
def test_broker_service_config_runs_in_a_real_mosquitto(tmp_path: Path) -> None:
    """The container's sed fills the template; the same substitutions (on a free port and
    loopback instead of 1883 and 0.0.0.0) give a config Mosquitto accepts."""
    service = compose()["services"]["broker"]
    script = service["command"][2].replace("$$", "$")
    substitutions = re.findall(r"-e 's/(\$\{\w+\})/([^/]*)/'", script)
    assert dict(substitutions) == {
        "${port}": "1883",
        "${bind_address}": "0.0.0.0",
        **{f"${{{name}}}": value for name, value in size_limits().items()},
    }
    mounted = service["volumes"][0].split(":")[0]
    text = (ROOT / mounted).read_text(encoding="utf-8")
    port = free_port()
    local = {**dict(substitutions), "${port}": str(port), "${bind_address}": "127.0.0.1"}
    for name, _ in substitutions:
        text = text.replace(name, local[name])
    assert "${" not in text
    config = tmp_path / "mosquitto.conf"
    config.write_text(text, encoding="utf-8")
    process = subprocess.Popen([find_mosquitto(), "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        ready = lambda: process.poll() is not None or port_accepts("127.0.0.1", port)  # noqa: E731
        wait_until(ready, 10, "mosquitto")
        assert process.poll() is None, "mosquitto refused the rendered config"
        session = MqttSession(BrokerSettings(port=port), client_id="compose-check")
        session.start(wait_s=5)  # an MQTT client gets in
        session.stop(timeout_s=1)
    finally:
        process.terminate()
        process.wait(10)


def test_dockerfile_copies_every_package_and_config() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    packages = re.search(r"^packages = \[(.*)\]$", pyproject, re.M)
    assert packages is not None
    top_levels = {name.strip(' "').split(".")[0] for name in packages.group(1).split(",")}
    assert top_levels | {"configs", "pyproject.toml"} <= copied
    assert all((ROOT / path).exists() for path in copied)
    assert re.search(r"^ARG TORCH_INDEX=\S+/whl/cpu$", text, re.M), "CPU torch by default"
    assert "FROM python:${PYTHON_VERSION}-slim" in text


@pytest.mark.parametrize("name", ["worker.compose.yaml", "device.compose.yaml"])
def test_compose_configs_name_the_broker_service(name: str) -> None:
    data = yaml.safe_load((ROOT / "configs" / name).read_text(encoding="utf-8"))
    assert data["broker"]["host"] == "broker"
