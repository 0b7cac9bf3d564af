"""Every benchmark's `--json` carries the same provenance block: the cheap benchmarks run for
real with tiny settings, the expensive ones are checked through their report model's schema."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mqtt_session.client import BrokerSettings
from splitmq.bench.backends import BackendBenchReport
from splitmq.bench.chooser import ChooserReport
from splitmq.bench.codec import CodecReport
from splitmq.bench.cold_start import ColdStartReport
from splitmq.bench.device_footprint import FootprintReport
from splitmq.bench.fleet import FleetReport
from splitmq.bench.grid import GridReport
from splitmq.bench.live import LiveReport
from splitmq.bench.prepare import PrepareReport
from splitmq.bench.report import BenchReport, Provenance, git_commit
from splitmq.bench.tcp_info import TcpInfoReport
from splitmq.bench.threads import ThreadsReport
from splitmq.bench.transport import TransportReport
from splitmq.bench.worker import WorkerReport
from splitmq.cli import build_parser, main
from splitting.registry import ModelSpec, register_model, unregister_model
from tests.support.grid_model import GridNet, grid_blocks
from tests.support.toy_model import toy_model_profile, toy_server

ROOT = Path(__file__).resolve().parents[2]
PROVENANCE_KEYS = {
    "commit",
    "machine",
    "cpu_cores",
    "python",
    "torch",
    "backends",
    "date_utc",
    "settings",
}

#: Every `splitmq bench` subcommand and the model of its report.
REPORTS: dict[str, type[BenchReport]] = {
    "codec": CodecReport,
    "transport": TransportReport,
    "chooser": ChooserReport,
    "live": LiveReport,
    "grid": GridReport,
    "worker": WorkerReport,
    "fleet": FleetReport,
    "cold-start": ColdStartReport,
    "tcp-info": TcpInfoReport,
    "backends": BackendBenchReport,
    "device-footprint": FootprintReport,
    "prepare": PrepareReport,
    "threads": ThreadsReport,
}


def bench_subcommands() -> set[str]:
    parser = build_parser(["bench"])
    bench = next(
        action.choices["bench"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    sub = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def provenance_of(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    provenance: dict[str, Any] = report["provenance"]
    assert set(provenance) == PROVENANCE_KEYS
    assert set(provenance["backends"]) == {"onnxruntime", "openvino"}
    assert {"cpus", "processor", "python", "date"} <= set(provenance["machine"])
    assert provenance["date_utc"].endswith("Z") or "+00:00" in provenance["date_utc"]
    return provenance


def test_every_bench_subcommand_has_a_report_model() -> None:
    assert bench_subcommands() == set(REPORTS)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_report_model_requires_the_provenance_block(name: str) -> None:
    schema = REPORTS[name].model_json_schema()
    assert "provenance" in schema["required"]
    provenance = schema["$defs"]["Provenance"]
    assert set(provenance["properties"]) == PROVENANCE_KEYS


def test_provenance_carries_the_commit_inside_a_checkout() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert git_commit() == head.stdout.strip()
    assert Provenance.collect().commit == head.stdout.strip()


def test_provenance_has_no_commit_outside_a_checkout(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None


@pytest.fixture
def chooser_inputs(tmp_path: Path) -> dict[str, Path]:
    """A short 4 Mbit/s trace, a toy device profile and its server profile."""
    trace = tmp_path / "short.up"
    trace.write_text("\n".join(str(t) for t in np.arange(1, 5_001, 3)) + "\n5000\n")
    device = tmp_path / "device.json"
    toy_model_profile().save(device)
    server = tmp_path / "server.json"
    toy_server().save(server)
    return {"trace": trace, "device": device, "server": server}


def test_chooser_json_carries_provenance_and_its_settings(
    chooser_inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "chooser.json"
    argv = ["bench", "chooser", "--trace", str(chooser_inputs["trace"]), "--model", "toy"]
    argv += ["--device-profile", str(chooser_inputs["device"]), "--codecs", "int8"]
    argv += ["--server-profile", str(chooser_inputs["server"]), "--duration", "10"]
    assert main([*argv, "--json", str(out)]) == 0
    settings = provenance_of(out)["settings"]
    assert settings["traces"] == [str(chooser_inputs["trace"])]
    assert settings["duration_s"] == 10.0 and settings["codecs"] == ["int8"]


@pytest.fixture
def gridnet() -> Iterator[str]:
    register_model(ModelSpec(name="gridnet", build=GridNet, blocks=grid_blocks, input_size=32))
    yield "gridnet"
    unregister_model("gridnet")


def test_grid_json_carries_provenance_and_its_settings(gridnet: str, tmp_path: Path) -> None:
    out = tmp_path / "grid.json"
    argv = ["bench", "grid", "--model", gridnet, "--cache-dir", str(tmp_path / "cache")]
    argv += ["--points", "3", "--max-batch", "2"]
    assert main([*argv, "--json", str(out)]) == 0
    settings = provenance_of(out)["settings"]
    assert settings["models"] == [gridnet] and settings["points"] == 3


@pytest.mark.integration
def test_transport_json_carries_provenance(tmp_path: Path, broker_settings: BrokerSettings) -> None:
    out = tmp_path / "transport.json"
    argv = ["bench", "transport", "--rtt-requests", "5", "--burst", "20", "--devices", "2"]
    argv += ["--host", broker_settings.host, "--port", str(broker_settings.port)]
    assert main([*argv, "--json", str(out)]) == 0
    settings = provenance_of(out)["settings"]
    assert settings["rtt_requests"] == 5 and settings["burst_requests"] == 20


@pytest.mark.integration
def test_fleet_json_carries_provenance(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    argv = ["bench", "fleet", "--devices", "2", "--rate", "5", "--duration", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    settings = provenance_of(out)["settings"]
    assert settings["devices"] == 2 and settings["rate_hz"] == 5.0


@pytest.mark.integration
def test_tcp_info_json_carries_provenance(tmp_path: Path) -> None:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("network namespaces need root")
    out = tmp_path / "tcp-info.json"
    assert main(["bench", "tcp-info", "--json", str(out)]) == 0
    assert provenance_of(out)["settings"]["phases"] == [[8.0, 12], [2.0, 8]]


def test_a_benchmark_run_as_a_script_reports_the_same_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from splitmq.bench.report import emit_with_provenance

    out = tmp_path / "script.json"
    emit_with_provenance({"bench": "frozen_worker", "rate_hz": 2.0, "runs": []}, str(out))
    written = json.loads(out.read_text())
    assert written == json.loads(capsys.readouterr().out)
    assert set(written["provenance"]) == PROVENANCE_KEYS
    assert written["provenance"]["settings"] == {"rate_hz": 2.0}
