"""A torch-free device as a fleet installs it: its disk, its first answer, its memory.

`splitmq bench device-footprint` installs `splitmq[device]` from this checkout into a fresh
venv (or takes `--venv`), exports lite0 once, and starts an embedded Mosquitto and a PyTorch
worker in this process. Then it runs `device-node` from that venv with the onnxruntime backend
and the dynamic chooser for `--requests` requests on the bundled photographs. It reports the
venv's size on disk, the seconds from the device's start to its first result (its own profiling
of the build included), and the device process's peak resident memory.

The venv is installed with `pip install --no-compile`, as the README tells a fleet to: pip would
otherwise compile every module of every dependency (27 MB, most never imported), while the
device compiles only what it imports, on its first start. So the size is measured after the
run, that bytecode included, and the first result's time includes compiling it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from PIL import Image
from pydantic import Field

from broker.launcher import MosquittoBroker
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.errors import BenchError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitting.images import sample_images
from splitting.onnx_export import ensure_exported
from splitting.registry import load_model

MODEL = "efficientnet-lite0"
CHECKOUT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 900.0
POLL_S = 0.02
DEVICE_SLOWDOWN = 8.0


class FootprintOptions(BenchOptions):
    requests: int = Field(100, ge=1)
    venv: Path | None = Field(None, strict=False, description="reuse this venv; None: a new one")


class FootprintReport(BenchReport):
    venv_mb: float = Field(description="the device venv on disk (its files' sizes)")
    installed_mb: float = Field(description="the venv as installed, before the device ran")
    bytecode_mb: float = Field(description="of venv_mb, the bytecode (.pyc) the device compiled")
    first_result_s: float = Field(description="device start to its first result record")
    peak_rss_mb: float = Field(description="the device process's peak resident memory")
    requests: int
    offloaded: int
    targets: dict[str, bool]


def run_device_footprint(options: FootprintOptions) -> FootprintReport:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="splitmq-footprint-")))
        venv = options.venv or work / "venv"
        if not (venv / "bin" / "device-node").exists():
            _install(venv)
        installed_mb = _disk_mb(venv)
        model = load_model(MODEL)
        export = ensure_exported(model, work / "onnx")
        broker = stack.enter_context(MosquittoBroker())
        settings = BrokerSettings(host=broker.host, port=broker.port)
        worker = WorkerConfig(
            broker=settings, worker_id="footprint-w", models=[ModelEntry(name=MODEL)], device="cpu"
        )
        runner = ModelTailRunner.from_config(worker)
        stack.enter_context(EdgeWorker(worker, runner))
        config = _device_config(work, settings, export.parent)
        first_s, peak_mb, jsonl = _run_device(venv, config, work, options.requests)
        venv_mb = _disk_mb(venv)
        bytecode_mb = _disk_mb(venv, "*.pyc")
    records = [json.loads(line) for line in jsonl]
    return FootprintReport(
        provenance=Provenance.collect(options),
        venv_mb=round(venv_mb, 1),
        installed_mb=round(installed_mb, 1),
        bytecode_mb=round(bytecode_mb, 1),
        first_result_s=round(first_s, 2),
        peak_rss_mb=round(peak_mb, 1),
        requests=len(records),
        offloaded=sum(1 for r in records if r["offloaded"]),
        targets={
            "venv_at_most_200_mb": venv_mb <= 200.0,
            "first_result_within_10_s": first_s <= 10.0,
            "peak_rss_at_most_250_mb": peak_mb <= 250.0,
        },
    )


def _install(venv: Path) -> None:
    """A venv with only what the device runs, as a device image would be built: no pip or
    setuptools in it (this process's pip installs into it) and no bytecode compiled ahead."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    pip += ["--quiet", "--no-compile", f"{CHECKOUT}[device]"]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        raise BenchError(f"installing splitmq[device] failed: {done.stderr.strip()[-500:]}")


def _device_config(work: Path, settings: BrokerSettings, export_dir: Path) -> Path:
    photos = work / "photos"
    photos.mkdir()
    for i, (_, image) in enumerate(sample_images()):
        Image.fromarray(image).save(photos / f"{i:02d}.png")
    config = {
        "broker": {"host": settings.host, "port": settings.port},
        "device_id": "footprint-device",
        "model": MODEL,
        "backend": "onnxruntime",
        "export_dir": str(export_dir),
        "torch_threads": 1,
        # A device as slow as a Raspberry Pi-class board against this host's worker, so that
        # the chooser offloads and the network path's memory is counted too.
        "slowdown": DEVICE_SLOWDOWN,
        "source": {"kind": "folder", "path": str(photos)},
    }
    path = work / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_device(
    venv: Path, config: Path, work: Path, requests: int
) -> tuple[float, float, list[str]]:
    """One device run: seconds to its first result record, its peak RSS in MB, its records."""
    jsonl = work / "records.jsonl"
    argv = [str(venv / "bin" / "device-node"), "--config", str(config), "--quiet"]
    argv += ["--requests", str(requests), "--jsonl", str(jsonl)]
    # A device writes the bytecode of what it imports, whatever this shell says.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["SPLITMQ_CACHE_DIR"] = str(work / "cache")
    started = time.monotonic()
    with _process(argv, env) as device:
        first_s = _first_line_after(jsonl, device, started)
        peak_mb = _wait_for_peak_rss(device, deadline=time.monotonic() + 60.0 + requests * 5.0)
    return first_s, peak_mb, jsonl.read_text().splitlines()


def _wait_for_peak_rss(device: subprocess.Popen[bytes], deadline: float) -> float:
    """Wait for the device to finish; its peak RSS in MB, from the kernel's high-water mark
    (VmHWM, which starts afresh at exec: the rusage of a child forked from this torch-heavy
    process would start at this process's size)."""
    peak_kb = 0
    status = Path(f"/proc/{device.pid}/status")
    while device.poll() is None:
        if time.monotonic() > deadline:
            raise BenchError("the device did not finish its requests in time")
        with contextlib.suppress(OSError, ValueError):
            peak_kb = max(peak_kb, _vm_hwm_kb(status.read_text()))
        time.sleep(POLL_S)
    if device.returncode != 0:
        raise BenchError(f"the device exited {device.returncode}")
    return peak_kb / 1024.0


def _vm_hwm_kb(status: str) -> int:
    """VmHWM from /proc/PID/status; 0 once the process is a zombie (no memory lines)."""
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) if line else 0


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    device = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    try:
        yield device
    finally:
        if device.poll() is None:
            device.kill()
            device.wait()


def _first_line_after(path: Path, device: subprocess.Popen[bytes], started: float) -> float:
    while not (path.exists() and path.read_text().strip()):
        if device.poll() is not None:
            raise BenchError(f"the device exited {device.returncode} before its first result")
        time.sleep(POLL_S)
    return time.monotonic() - started


def _disk_mb(folder: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file()) / 1e6


def format_report(report: FootprintReport) -> str:
    marks = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in report.targets.items())
    return (
        f"torch-free device: venv {report.venv_mb:.0f} MB after the run ({report.installed_mb:.0f} "
        f"MB installed, {report.bytecode_mb:.0f} MB of bytecode it compiled), first result after "
        f"{report.first_result_s:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB over "
        f"{report.requests} requests ({report.offloaded} offloaded)\n  targets: {marks}"
    )
