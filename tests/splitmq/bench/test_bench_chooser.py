"""`splitmq bench chooser` end to end on a short synthetic trace (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splitmq.cli import main
from tests.support.toy_model import toy_model_profile, toy_server


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A 4 Mbit/s trace with a 3-s outage, a toy device profile and its server profile."""
    ms = np.arange(1, 20_001, 3)  # one packet every 3 ms: 4 Mbit/s
    ms = ms[(ms < 8_000) | (ms >= 11_000)]
    trace = tmp_path / "synthetic.up"
    trace.write_text("\n".join(str(t) for t in ms) + "\n20000\n")
    device = tmp_path / "device.json"
    toy_model_profile().save(device)
    server = tmp_path / "server.json"
    toy_server().save(server)
    return {"trace": trace, "device": device, "server": server}


def bench(inputs: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        [
            "bench", "chooser",
            "--trace", str(inputs["trace"]),
            "--model", "toy",
            "--device-profile", str(inputs["device"]),
            "--server-profile", str(inputs["server"]),
            "--duration", "60",
            "--codecs", "int8",
            "--json", str(out),
            *extra,
        ]
    )  # fmt: skip


def test_bench_writes_every_strategy_for_every_trace(inputs, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench(inputs, out, "--plots", str(tmp_path / "plots")) == 0
    report = json.loads(out.read_text())
    entry = report["traces"]["synthetic.up"]
    expected = {"local", "offload", "static_best", "neurosurgeon", "dynamic", "oracle"}
    expected |= {"dynamic_race", "dynamic_race_always", "dynamic_knows_past"}
    expected |= {f"fixed_{k}" for k in range(5)}
    assert set(entry["strategies"]) == expected
    for name, stats in entry["strategies"].items():
        assert set(stats) >= {"mean_ms", "p50_ms", "p95_ms", "p99_ms", "device_compute_ms"}
        assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
        shares = entry["split_share"][name]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert all(0 <= int(k) <= 4 for k in shares)
    # Racing costs device compute: never less than the same chooser without racing.
    race, dynamic = entry["strategies"]["dynamic_race"], entry["strategies"]["dynamic"]
    assert race["device_compute_ms"] >= dynamic["device_compute_ms"] - 1e-9
    always = entry["strategies"]["dynamic_race_always"]
    assert always["device_compute_ms"] >= race["device_compute_ms"] - 1e-9
    error = entry["estimator_error"]
    assert error["samples"] > 0 and 0 <= error["p50"] <= error["p90"]
    captured = entry["captured"]
    assert captured is None or captured <= 1.0 + 1e-9
    assert entry["static_best_k"] in range(5)
    assert 0.0 <= entry["oracle_agreement"] <= 1.0
    assert entry["requests"] > 100
    assert report["settings"]["load"] == "switching"
    assert report["settings"]["slowdown"] == 4.0
    assert report["settings"]["min_agreement"] == 0.99
    assert [0, "int8"] in report["settings"]["pairs"]
    assert Path(entry["plot"]).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "synthetic.up" in printed and "dynamic" in printed
    # Development targets are the JSON's business; the table shows users the figures only.
    assert "targets" in entry and "targets" not in printed and ">= 90%" not in printed


def test_bench_reports_a_missing_server_profile_clearly(inputs, tmp_path, capsys):
    inputs["server"] = tmp_path / "absent.json"
    assert bench(inputs, tmp_path / "out.json") == 2
    assert "absent.json" in capsys.readouterr().err


def test_bench_refuses_a_bad_rate(inputs, tmp_path, capsys):
    assert bench(inputs, tmp_path / "out.json", "--rate", "0") == 2
    assert "--rate" in capsys.readouterr().err


def test_bench_takes_one_server_profile_source(inputs, tmp_path, capsys):
    code = bench(
        inputs, tmp_path / "out.json", "--measure-server-profile", str(tmp_path / "m.json")
    )
    assert code == 2
    assert "not both" in capsys.readouterr().err
