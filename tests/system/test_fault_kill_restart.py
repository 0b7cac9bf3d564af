"""Killed workers and a restarted broker under a running device process: every request ends
with exactly one record, and offloading resumes by itself.

Real processes throughout: Mosquitto, `edge-worker` processes serving efficientnet-lite0 at one
split, and a `device-node` process writing one JSON record per request. The printed counts are
the figures BENCHMARKS.md's reliability section quotes (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.launcher import MosquittoBroker
from edge_worker.config import ModelEntry, WorkerConfig
from mqtt_session.client import BrokerSettings
from schemas.topics import Topics
from splitmq.worker_process import worker_popen
from tests.support.waiting import wait_for_retained, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SPLIT = 5
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # The last line may be half written while the device runs.
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


class Fleet:
    """A broker, worker processes by name, and one device process."""

    def __init__(self, broker: MosquittoBroker, folder: Path) -> None:
        self.broker = broker
        self.folder = folder
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._workers = ExitStack()  # every worker process started, stopped by close()
        self.device: subprocess.Popen[str] | None = None
        self.records = folder / "records.jsonl"

    def start_worker(self, worker_id: str) -> None:
        config = WorkerConfig(
            broker=BrokerSettings(host=self.broker.host, port=self.broker.port),
            worker_id=worker_id,
            models=[ModelEntry(name=MODEL, splits=[SPLIT])],
            device="cpu",
            max_batch=1,
            torch_threads=1,
        )
        self.workers[worker_id] = self._workers.enter_context(
            worker_popen(config, env=ENV, quiet=True)
        )
        # A worker announces itself once warm; the scenarios start from a serving worker.
        settings = BrokerSettings(host=self.broker.host, port=self.broker.port)
        wait_for_retained(settings, Topics().telemetry(worker_id), bool, timeout_s=60)

    def start_device(self, *, trace: Path | None = None) -> None:
        config = self.folder / "device.yaml"
        config.write_text(
            f"broker: {{host: 127.0.0.1, port: {self.broker.port}, reconnect_max_delay_s: 2}}\n"
            f"device_id: fault-dev\nmodel: {MODEL}\ncodec: int8\ndeadline_ms: 2000\n"
            f"policy: {{kind: fixed, split: {SPLIT}}}\ntorch_threads: 1\n"
            + (f"trace: {trace}\n" if trace is not None else "")
        )
        command = [sys.executable, "-m", "device_node.cli", "--config", str(config)]
        command += ["--rate", "4", "--jsonl", str(self.records), "-q"]
        self.device = subprocess.Popen(
            command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
        )

    def offloaded_by(self, worker_id: str) -> int:
        return sum(r["worker_id"] == worker_id for r in read_records(self.records))

    def wait_offloads(self, worker_id: str, more: int, what: str) -> None:
        target = self.offloaded_by(worker_id) + more
        wait_until(lambda: self.offloaded_by(worker_id) >= target, 120, what)

    def wait_records(self, more: int, what: str) -> None:
        target = len(read_records(self.records)) + more
        wait_until(lambda: len(read_records(self.records)) >= target, 60, what)

    def stop_device(self) -> list[dict[str, Any]]:
        assert self.device is not None
        self.device.send_signal(signal.SIGTERM)
        out, _ = self.device.communicate(timeout=60)
        assert self.device.returncode == 0, out
        return read_records(self.records)

    def close(self) -> None:
        if self.device is not None:
            if self.device.poll() is None:
                self.device.kill()
            self.device.wait()
        self._workers.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with MosquittoBroker() as broker:
        running = Fleet(broker, tmp_path)
        try:
            yield running
        finally:
            running.close()


def one_record_each(records: list[dict[str, Any]], scenario: str) -> None:
    """Every request id of the device's sequence exactly once; print the reliability counts."""
    sequence = sorted(int(r["request_id"].rsplit("-", 1)[1]) for r in records)
    assert sequence == list(range(1, len(records) + 1)), "a request without exactly one record"
    remote = sum(r["offloaded"] for r in records)
    ids = [r["request_id"] for r in records]
    lost = max(sequence) - len(set(ids))
    duplicates = len(ids) - len(set(ids))
    print(
        f"{scenario}: {max(sequence)} requests, {len(records)} records, {remote} remote, "
        f"{len(records) - remote} local, lost {lost}, duplicates {duplicates}"
    )


def test_a_killed_worker_costs_fallbacks_only_and_a_new_one_takes_over(fleet: Fleet) -> None:
    fleet.start_worker("w1")
    fleet.start_device()
    fleet.wait_offloads("w1", 4, "offloads to w1")
    fleet.workers["w1"].send_signal(signal.SIGKILL)
    fleet.workers["w1"].wait()
    fleet.wait_records(6, "records while no worker runs")
    fleet.start_worker("w2")
    fleet.wait_offloads("w2", 3, "offloads to the new worker")
    records = fleet.stop_device()
    one_record_each(records, "worker SIGKILL, one worker, then a new one")
    local = [r for r in records if not r["offloaded"]]
    assert local, "the killed worker's requests ran locally"
    assert {r["worker_id"] for r in records if r["offloaded"]} == {"w1", "w2"}


def test_with_two_workers_a_killed_one_leaves_the_other_serving(fleet: Fleet) -> None:
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_device()
    fleet.wait_offloads("w1", 2, "offloads to w1")
    fleet.wait_offloads("w2", 2, "offloads to w2")
    fleet.workers["w1"].send_signal(signal.SIGKILL)
    fleet.workers["w1"].wait()
    killed_at = len(read_records(fleet.records))
    fleet.wait_offloads("w2", 6, "w2 serving alone")
    records = fleet.stop_device()
    one_record_each(records, "worker SIGKILL, two workers")
    # After the last will, nothing goes to w1: the last records were all served by w2.
    assert {r["worker_id"] for r in records[-4:]} == {"w2"}
    assert len(records) > killed_at


def test_a_broker_restart_costs_fallbacks_only_and_offloading_resumes(fleet: Fleet) -> None:
    fleet.start_worker("w1")
    fleet.start_device()
    fleet.wait_offloads("w1", 4, "offloads before the restart")
    fleet.broker.restart()
    fleet.wait_offloads("w1", 4, "offloads after the restart")
    records = fleet.stop_device()
    one_record_each(records, "broker restart")


def test_an_uplink_outage_costs_fallbacks_only_and_offloading_resumes(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The device's uplink through the trace shaper: 3 s at about 12 Mbit/s, then 4 s of zero
    capacity, repeating. Requests caught in the dead seconds fall back locally at their
    deadline; each still ends with one record, and offloads resume when capacity returns."""
    trace = tmp_path / "outage.up"
    trace.write_text("\n".join(str(ms) for ms in range(1, 3001)) + "\n7000\n")
    fleet.start_worker("w1")
    fleet.start_device(trace=trace)
    wait_until(
        lambda: any(r["fallback"] == "timeout" for r in read_records(fleet.records)),
        120,
        "a request caught in the outage",
    )
    fleet.wait_offloads("w1", 4, "offloads after the outage")
    records = fleet.stop_device()
    one_record_each(records, "uplink outage (4 s of every 7 at zero capacity)")
    assert {r["fallback"] for r in records if not r["offloaded"]} <= {"timeout", "disconnected"}
