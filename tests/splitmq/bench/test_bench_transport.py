"""The transport benchmark on a small burst: its JSON keys, and nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqtt_session.client import BrokerSettings
from splitmq.bench.errors import BenchError
from splitmq.bench.transport import TransportOptions, run_transport_bench
from splitmq.cli import main
from splitmq.reports import LatencyStats

pytestmark = pytest.mark.integration


def test_small_burst_is_answered_in_full(broker_settings: BrokerSettings) -> None:
    options = TransportOptions(rtt_requests=40, warmup=5, burst_requests=400, burst_devices=4)
    result = run_transport_bench(options, settings=broker_settings).model_dump()
    rtt, burst = result["rtt_ms"], result["burst"]
    assert rtt["count"] == 40
    assert 0 < rtt["p50_ms"] <= rtt["p99_ms"] <= rtt["max_ms"]
    raw = result["raw_rtt_ms"]
    assert raw["count"] == 40
    assert 0 < raw["p50_ms"] <= raw["p99_ms"] <= raw["max_ms"]
    assert result["overhead_ratio"]["p50"] == pytest.approx(rtt["p50_ms"] / raw["p50_ms"])
    assert burst["sent"] == burst["requested"] == 400
    assert burst["answered"] == burst["sent"]
    assert burst["lost"] == 0
    assert burst["per_s"] > 0
    assert burst["outcomes"] == {"ok": 400}
    # The worker (its own process) counted every request it answered, round trips included.
    assert result["worker"]["served"] == 5 + 40 + 400


def test_cli_writes_the_json_keys(tmp_path: Path, broker_settings: BrokerSettings) -> None:
    out = tmp_path / "transport.json"
    argv = ["bench", "transport", "--rtt-requests", "20", "--burst", "100", "--devices", "2"]
    argv += ["--host", broker_settings.host, "--port", str(broker_settings.port)]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["rtt_ms"]) == set(LatencyStats.model_fields)
    assert set(result["raw_rtt_ms"]) == set(LatencyStats.model_fields)
    assert result["overhead_ratio"]["p50"] > 0
    assert {"sent", "answered", "lost", "per_s"} <= set(result["burst"])
    assert result["burst"]["lost"] == 0
    assert set(result["targets"]) == {"rtt_p50_ms", "rtt_p99_ms", "met"}


def test_options_are_checked() -> None:
    with pytest.raises(BenchError):
        TransportOptions(burst_devices=0)
