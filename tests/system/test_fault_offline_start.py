"""A device process started while its broker is down: it classifies locally from the first
request on, and offloads once a broker and a worker appear, one record per request throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.launcher import MosquittoBroker, free_port
from device_node.records import Fallback
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SPLIT = 5


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may be half written while the device runs.
    return [json.loads(line) for line in lines if line.endswith("}")]


@pytest.fixture
def device_port() -> int:
    return free_port()


@pytest.fixture
def offline_device(
    tmp_path: Path, device_port: int
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    config = tmp_path / "device.yaml"
    config.write_text(
        f"broker: {{host: 127.0.0.1, port: {device_port}, reconnect_max_delay_s: 2}}\n"
        f"device_id: offline-dev\nmodel: {MODEL}\ncodec: int8\ndeadline_ms: 20000\n"
        f"policy: {{kind: fixed, split: {SPLIT}}}\ntorch_threads: 1\n"
    )
    jsonl = tmp_path / "records.jsonl"
    command = [sys.executable, "-m", "device_node.cli", "--config", str(config)]
    command += ["--rate", "4", "--jsonl", str(jsonl), "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        yield process, jsonl
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_device_started_without_a_broker_runs_locally_then_offloads(
    offline_device: tuple[subprocess.Popen[str], Path], device_port: int
) -> None:
    process, jsonl = offline_device
    # No broker on the port: the device answers every request itself.
    wait_until(
        lambda: len(read_records(jsonl)) >= 3 or process.poll() is not None,
        90,
        "local records from a device without a broker",
    )
    assert process.poll() is None, "the device gave up without a broker"
    offline = read_records(jsonl)
    assert all(r["fallback"] == Fallback.NOT_CONNECTED and not r["offloaded"] for r in offline)

    with MosquittoBroker(device_port) as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port)
        config = WorkerConfig(
            broker=settings,
            worker_id="late-worker",
            models=[ModelEntry(name=MODEL, splits=[SPLIT])],
            device="cpu",
            max_batch=1,
            torch_threads=1,
        )
        with EdgeWorker(config):
            wait_until(
                lambda: sum(r["offloaded"] for r in read_records(jsonl)) >= 3,
                60,
                "offloaded records once the broker and a worker are up",
            )
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    records = read_records(jsonl)
    sequence = sorted(int(r["request_id"].rsplit("-", 1)[1]) for r in records)
    assert sequence == list(range(1, len(records) + 1)), "a request without exactly one record"
    offloaded = [r for r in records if r["offloaded"]]
    assert {r["worker_id"] for r in offloaded} == {"late-worker"}
    local = [r for r in records if not r["offloaded"]]
    assert {r["fallback"] for r in local} <= {Fallback.NOT_CONNECTED, Fallback.NO_WORKER}
    assert f"{len(records)} requests, {len(offloaded)} offloaded" in out
    # The figures BENCHMARKS.md's reliability section quotes (pytest -s shows them).
    print(
        f"broker down at device start: {len(records)} requests, {len(offloaded)} offloaded, "
        f"{len(local)} local, lost 0, duplicates 0"
    )
