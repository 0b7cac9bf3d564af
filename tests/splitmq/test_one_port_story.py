"""One default port story: `splitmq broker` picks a free port and prints the flags that reach
it; the commands that connect default to 1883 and say so when they find no splitmq there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.launcher import MosquittoBroker
from mqtt_session.client import BrokerSettings
from schemas.topics import Topics
from splitmq.cli import main
from splitmq.commands.broker import connect_flags
from splitmq.monitoring.cli_args import WatchTarget, no_fleet_warning
from splitmq.monitoring.fleet import BrokerView, FleetSnapshot, WorkerView
from splitmq_base.cli import EXIT_CONFIG, EXIT_OK

ROOT = Path(__file__).resolve().parents[2]
SPLITMQ = [sys.executable, "-m", "splitmq.cli"]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """The commands run in-process install their own SIGINT/SIGTERM/SIGHUP handlers."""
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_the_connect_line_has_the_flags_every_command_takes() -> None:
    assert connect_flags("127.0.0.1", 41234) == "--host 127.0.0.1 --port 41234"
    assert connect_flags("0.0.0.0", 41234) == "--host 127.0.0.1 --port 41234"


def test_the_connect_line_of_a_tls_profile_names_its_ca(tmp_path: Path) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener ${{port}} ${{bind_address}}\ncafile {tmp_path}/ca.crt\n")
    flags = connect_flags("127.0.0.1", 8883, config)
    assert flags.startswith(f"--host 127.0.0.1 --port 8883 --tls-ca {tmp_path}/ca.crt")
    assert f"--config {tmp_path}/users/NAME.yaml --port 8883" in flags


def _target() -> WatchTarget:
    return WatchTarget(BrokerSettings(port=1883), Topics("site"), "homeassistant")


def test_an_empty_broker_gets_a_one_line_warning_naming_the_port() -> None:
    empty = FleetSnapshot(workers={}, devices={}, broker=BrokerView(), taken_at=0.0)
    warning = no_fleet_warning(empty, _target())
    assert warning is not None and "\n" not in warning
    assert "'site/'" in warning and "mqtt://127.0.0.1:1883" in warning
    assert "`splitmq broker` picks a free port" in warning


def test_a_broker_with_nodes_gets_no_warning() -> None:
    fleet = FleetSnapshot(
        workers={"w1": WorkerView("w1", online=False)},
        devices={},
        broker=BrokerView(),
        taken_at=0.0,
    )
    assert no_fleet_warning(fleet, _target()) is None


@pytest.fixture
def splitmq_broker() -> Iterator[str]:
    """`splitmq broker` in a process of its own; yields the flags its connect line printed."""
    process = subprocess.Popen(
        [*SPLITMQ, "broker"], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        flags = None
        deadline = time.monotonic() + 20
        while flags is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("connect with: "):
                flags = line.removeprefix("connect with: ").strip()
        assert flags is not None, "splitmq broker printed no connect line"
        yield flags
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@pytest.mark.integration
def test_the_printed_flags_reach_the_broker_and_an_empty_one_is_named(
    splitmq_broker: str,
) -> None:
    assert "--port 1883" not in splitmq_broker
    done = subprocess.run(
        [*SPLITMQ, "monitor", *splitmq_broker.split(), "--once", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["workers"] == []
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "no splitmq node has published" in warnings[0]


@pytest.mark.integration
def test_a_port_in_use_says_so_on_the_first_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["broker", "--port", str(port)]) == EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"splitmq broker: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in lines[-1]


def test_the_exporters_listen_port_in_use_is_one_line(
    broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["exporter", "--port", str(broker.port), "--listen", f"127.0.0.1:{port}", "-q"]
        assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err == (
        f"splitmq exporter: error: --listen 127.0.0.1:{port}: cannot serve there: already in use"
    )
