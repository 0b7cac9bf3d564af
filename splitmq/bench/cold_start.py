"""A fresh worker and fresh devices, as processes: how soon do the devices offload?

`splitmq bench cold-start` starts an embedded Mosquitto and a real worker process (lite0, one
torch thread), waits `--head-start` seconds, then starts `--devices` device processes (the
dynamic chooser, a device `--slowdown` times slower than this host, requests back to back).
With `--busy-cores N`, N CPU-bound processes run beside them for the whole run. Per device it
reports the index of the first offloaded request and how many of its requests ran locally by
choice, so a chooser that learns from a worker's cold start, or from its own, shows here.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from broker.launcher import MosquittoBroker
from edge_worker.config import ModelEntry, WorkerConfig
from mqtt_session.client import BrokerSettings
from splitmq.bench.errors import BenchError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.reports import Machine, machine
from splitmq.worker_process import worker_process
from splitmq_base.models import StrictModel

MODEL = "efficientnet-lite0"
DEVICE_RUN_S = 300.0  # a device process that has not finished by then is killed


class ColdStartOptions(BenchOptions):
    devices: int = 2
    requests: int = 10
    head_start_s: float = 1.0
    busy_cores: int = 0
    slowdown: float = 4.0


class DeviceSummary(StrictModel):
    """One device process's requests: when it first offloaded, and what ran locally."""

    requests: int
    first_offload: int | None = Field(description="1-based index; None: never offloaded")
    offloaded: int
    local_by_choice: int
    local_reasons: list[str]
    fallbacks: list[str]
    splits: list[int]
    total_ms: list[float]


class ColdStartReport(BenchReport):
    benchmark: str = "cold-start"
    machine: Machine
    settings: ColdStartOptions
    wall_s: float
    devices: dict[str, DeviceSummary]
    first_offload_max: int


def run_cold_start_bench(options: ColdStartOptions) -> ColdStartReport:
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="splitmq-cold-")))
        for _ in range(options.busy_cores):
            stack.enter_context(_burner())
        broker = stack.enter_context(MosquittoBroker())
        settings = BrokerSettings(host=broker.host, port=broker.port)
        config = WorkerConfig(
            broker=settings,
            worker_id="fresh-worker",
            models=[ModelEntry(name=MODEL)],
            device="cpu",
            torch_threads=1,
        )
        started = time.monotonic()
        stack.enter_context(worker_process(config, stdout=subprocess.DEVNULL, quiet=True))
        time.sleep(options.head_start_s)
        records = _run_devices(options, settings, folder)
        wall_s = time.monotonic() - started
    per_device = {device: _device_summary(rows) for device, rows in sorted(records.items())}
    return ColdStartReport(
        provenance=Provenance.collect(options),
        machine=machine(),
        settings=options,
        wall_s=round(wall_s, 2),
        devices=per_device,
        first_offload_max=max(
            (d.first_offload or options.requests + 1) for d in per_device.values()
        ),
    )


@contextlib.contextmanager
def _burner() -> Iterator[None]:
    """One CPU-bound process, for the benchmark's duration."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def _run_devices(
    options: ColdStartOptions, settings: BrokerSettings, folder: Path
) -> dict[str, list[dict[str, Any]]]:
    processes = {}
    for i in range(options.devices):
        device_id = f"cold{i + 1}"
        path = folder / f"{device_id}.yaml"
        path.write_text(yaml.safe_dump(_device_config(device_id, settings, options)))
        jsonl = folder / f"{device_id}.jsonl"
        command = [sys.executable, "-m", "device_node.cli", "--config", str(path)]
        command += ["--requests", str(options.requests), "--jsonl", str(jsonl), "-q"]
        processes[device_id] = (subprocess.Popen(command, stdout=subprocess.DEVNULL), jsonl)
    records = {}
    for device_id, (process, jsonl) in processes.items():
        try:
            code = process.wait(timeout=DEVICE_RUN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise BenchError(f"{device_id} did not finish in {DEVICE_RUN_S:g} s") from None
        if code != 0:
            raise BenchError(f"{device_id} exited with code {code}")
        records[device_id] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return records


def _device_config(
    device_id: str, settings: BrokerSettings, options: ColdStartOptions
) -> dict[str, Any]:
    return {
        "broker": {"host": settings.host, "port": settings.port, "reconnect_max_delay_s": 2},
        "device_id": device_id,
        "model": MODEL,
        "slowdown": options.slowdown,
        "torch_threads": 1,
        "homeassistant": {"enabled": False},
    }


def _device_summary(rows: list[dict[str, Any]]) -> DeviceSummary:
    offloaded = [i + 1 for i, row in enumerate(rows) if row["offloaded"]]
    local = [row for row in rows if not row["offloaded"] and row["fallback"] is None]
    return DeviceSummary(
        requests=len(rows),
        first_offload=offloaded[0] if offloaded else None,
        offloaded=len(offloaded),
        local_by_choice=len(local),
        local_reasons=sorted({row["reason"] for row in local}),
        fallbacks=sorted({row["fallback"] for row in rows if row["fallback"]}),
        splits=[row["split"] for row in rows],
        total_ms=[round(float(row["total_ms"]), 1) for row in rows],
    )


def format_report(result: ColdStartReport) -> str:
    settings = result.settings
    lines = [
        f"cold start: worker started {settings.head_start_s:g} s before "
        f"{settings.devices} devices, {settings.busy_cores} busy core(s), "
        f"{settings.requests} requests each"
    ]
    for device, summary in result.devices.items():
        lines.append(
            f"  {device}: first offload at request {summary.first_offload}, "
            f"{summary.offloaded} offloaded, {summary.local_by_choice} local by choice "
            f"{summary.local_reasons}, splits {summary.splits}"
        )
    return "\n".join(lines)
