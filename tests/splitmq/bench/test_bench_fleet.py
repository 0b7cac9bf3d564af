"""The fleet benchmark at a small size: every request answered once, the JSON keys the issue
names, latency against the bare baseline; and a bounded worker's rejections are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.bench.fleet import FleetOptions, run_fleet_bench
from splitmq.cli import main
from splitmq.reports import LatencyStats

pytestmark = pytest.mark.integration


def test_cli_reports_every_request_once(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    argv = ["bench", "fleet", "--devices", "6", "--rate", "5", "--duration", "2"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"sent", "answered", "rejected", "expired", "lost", "per_s", "mean_batch"} <= set(result)
    assert set(result["latency_ms"]) == set(LatencyStats.model_fields)
    assert result["sent"] == 6 * 5 * 2
    assert result["answered"] == result["sent"] and result["lost"] == result["duplicates"] == 0
    assert result["latency_ratio"]["p50"] == pytest.approx(
        result["latency_ms"]["p50_ms"] / result["raw_rtt_ms"]["p50_ms"]
    )


def test_a_bounded_worker_rejects_the_excess_and_loses_nothing() -> None:
    # A bound of one byte (a request that arrives while another waits is rejected), and twice
    # the load an echo worker answers here.
    result = run_fleet_bench(
        FleetOptions(devices=40, rate_hz=50, duration_s=1, max_held_bytes=1, max_batch=1)
    ).model_dump()
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["answered"] + result["rejected"] == result["sent"]
    assert result["rejected"] > 0
