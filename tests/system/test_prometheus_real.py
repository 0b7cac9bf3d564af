"""A real Prometheus (the distribution's `prometheus` and `promtool`) scraping a real
`splitmq exporter` every second, while a real edge worker and a real `device-node` run.

Two devices start before the worker: a fixed-split one whose first requests fall back (no
worker) and a dynamic one whose chooser estimates the uplink, so every panel of
docs/grafana/splitmq-fleet.json has data to show. Skipped,
with the reason, where the binaries are absent (`make setup` installs them where apt exists).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.launcher import MosquittoBroker, free_port
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.messages import LATENCY_BUCKETS_MS

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="prometheus/promtool not installed (make setup installs Debian's `prometheus`)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "splitmq-alerts.yml"
RULES_TEST = ROOT / "docs" / "prometheus" / "splitmq-alerts.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "splitmq-fleet.json"
MODEL = "efficientnet-lite0"
DEVICE = "cam-prom"  # dynamic policy: the one whose latencies are compared
FIXED = "cam-fixed"  # a fixed split: falls back while no worker serves it
WORKER = "edge-prom"
REQUESTS = 40
WAIT_S = 90.0


@dataclass
class Stage:
    metrics_url: str
    prometheus_url: str
    device: subprocess.Popen[bytes]
    records: Path


def _get(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def _api(stage: Stage, path: str, **params: str) -> Any:
    url = f"{stage.prometheus_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    document = json.loads(_get(url))
    assert document["status"] == "success", document
    return document["data"]


def _poll(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def _start_device(
    settings: BrokerSettings, folder: Path, device_id: str, policy: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], Path]:
    config = {
        "broker": {"host": settings.host, "port": settings.port, "reconnect_max_delay_s": 2},
        "device_id": device_id,
        "model": MODEL,
        "codec": "int8",
        "policy": policy,
        "rate_hz": 2.0,
        "requests": REQUESTS,
        "state_interval_s": 0.5,
    }
    path = folder / f"{device_id}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    records = folder / f"{device_id}.jsonl"
    command = [sys.executable, "-m", "device_node.cli", "--config", str(path), "-q",
               "--jsonl", str(records)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    return process, records


def _prometheus(folder: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "splitmq", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert PROMETHEUS is not None
    command = [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    log = (folder / "prometheus.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=log), f"http://127.0.0.1:{port}"


def _exporter(settings: BrokerSettings) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "splitmq.cli", "exporter", "--host", settings.host,
               "--port", str(settings.port), "--listen", f"127.0.0.1:{port}", "-q"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL), port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    folder = tmp_path_factory.mktemp("prometheus")
    with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
        exporter, metrics_port = _exporter(settings)
        prometheus, prometheus_url = _prometheus(folder, metrics_port)
        device, records = _start_device(settings, folder, DEVICE, {"kind": "dynamic"})
        fixed, fixed_records = _start_device(settings, folder, FIXED, {"kind": "fixed", "split": 5})
        stage = Stage(f"http://127.0.0.1:{metrics_port}/metrics", prometheus_url, device, records)
        try:
            # No worker yet: the fixed device's requests fall back, as after a worker crash.
            _poll(lambda: _fallbacks(fixed_records) > 0, WAIT_S, "a fallback before the worker")
            worker = WorkerConfig(
                broker=settings,
                worker_id=WORKER,
                models=[ModelEntry(name=MODEL)],
                device="cpu",
                max_batch=1,
                telemetry_interval_s=0.5,
            )
            with EdgeWorker(worker):
                yield stage
        finally:
            for process in (device, fixed, prometheus, exporter):
                _stop(process)


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _fallbacks(path: Path) -> int:
    return sum(1 for record in _records(path) if record.get("fallback"))


def test_promtool_accepts_the_exporters_metrics(stage: Stage) -> None:
    _poll(lambda: b"splitmq_request_duration_seconds_bucket" in _get(stage.metrics_url), 30,
          "the device's latency histogram on /metrics")  # fmt: skip
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=_get(stage.metrics_url),
                          capture_output=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_the_exporter_is_an_up_target(stage: Stage) -> None:
    def up() -> bool:
        targets = _api(stage, "targets")["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    _poll(up, 30, "the exporter target up")  # the target list stays empty for a few seconds
    result = _api(stage, "query", query='up{job="splitmq"}')["result"]
    assert [float(r["value"][1]) for r in result] == [1.0]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_every_dashboard_query_returns_data_while_the_fleet_runs(stage: Stage) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 10
    empty = queries
    deadline = time.monotonic() + WAIT_S
    while empty and time.monotonic() < deadline:
        # A query that does not parse fails here with Prometheus's own error (status: error).
        empty = [q for q in queries if not _api(stage, "query", query=q)["result"]]
        time.sleep(1)
    assert empty == [], f"no data for: {empty}"
    assert stage.device.poll() is None or _records(stage.records), "the device never ran"


def _seconds_bucket_bounds(value_ms: float) -> tuple[float, float]:
    """The histogram bucket that holds `value_ms`, as (lower, upper) bounds in seconds."""
    edges = [0.0, *LATENCY_BUCKETS_MS, math.inf]
    for lower, upper in itertools.pairwise(edges):
        if value_ms <= upper:
            return lower / 1000.0, upper / 1000.0
    raise AssertionError("unreachable: the last bucket is +Inf")


def test_histogram_quantiles_lie_within_the_devices_own_latencies(stage: Stage) -> None:
    assert stage.device.wait(WAIT_S) == 0  # it stops after REQUESTS; its state stays retained
    records = _records(stage.records)
    assert len(records) == REQUESTS
    latencies = sorted(float(r["total_ms"]) for r in records)
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    # Prometheus interpolates inside a bucket, so the band is the device's p50..p99 widened
    # to the edges of the buckets that hold them.
    low, _ = _seconds_bucket_bounds(p50)
    _, high = _seconds_bucket_bounds(p99)
    query = f'sum by (le) (splitmq_request_duration_seconds_bucket{{device="{DEVICE}"}})'
    count_query = f'splitmq_request_duration_seconds_count{{device="{DEVICE}"}}'

    def final_count_scraped() -> bool:
        result = _api(stage, "query", query=count_query)["result"]
        return bool(result) and float(result[0]["value"][1]) == REQUESTS

    _poll(final_count_scraped, 30, "the device's final histogram scraped")
    for q in (0.5, 0.9):
        result = _api(stage, "query", query=f"histogram_quantile({q}, {query})")["result"]
        assert len(result) == 1
        value = float(result[0]["value"][1])
        assert low <= value <= high, (q, value, (p50, p99), (low, high))


def test_alert_rules_pass_promtool(stage: Stage) -> None:
    assert PROMTOOL is not None
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        done = subprocess.run([PROMTOOL, *command], capture_output=True, cwd=RULES.parent,
                              timeout=60, check=False, env={**os.environ})  # fmt: skip
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    groups = _api(stage, "rules")["groups"]  # the running server loaded them too
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert names == {
        "SplitmqWorkerOffline",
        "SplitmqFallbackRateRising",
        "SplitmqBrokerDroppingMessages",
    }
